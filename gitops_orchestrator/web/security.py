"""(being written)"""

from __future__ import annotations

from starlette.middleware import Middleware

MIDDLEWARE: list[Middleware] = []
