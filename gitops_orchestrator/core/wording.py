"""Phrases shared by the review modules and `plan`'s report: counts, lists, short digests.

Pure text helpers, so that every part of a plan words a number or a digest the same way.
"""

from __future__ import annotations

from collections.abc import Sequence


def count(number: int, noun: str) -> str:
    """`1 device`, `3 devices`: nouns here take a plain `s`."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def join(items: Sequence[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def short(digest: str | None) -> str:
    """The first 12 hex digits of a sha, as git and the pages show them."""
    return digest[:12] if digest else "unreadable"
