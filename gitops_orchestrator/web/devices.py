"""Routes supervisors call: `POST /file/device/discovery/register` (self-registration).

A registration is answered at once (204, as the original did) and handed to the introducer,
which fetches the device description and tells the device where we are; a supervisor that
waits on us must never wait for that. The body is checked strictly: a malformed one gets 400
with the reason, never a crash.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Protocol

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    IPvAnyAddress,
    StringConstraints,
    ValidationError,
)
from starlette.requests import Request
from starlette.responses import Response

from ..models import DEVICE_PATTERN
from .responses import BodyTooLarge, error, limited_body

# A registration is a few hundred bytes; anything near this limit is not one.
MAX_REGISTRATION = 64 * 1024


def _text(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("an address is written as text, like '10.0.0.5'")
    return value


def _empty_is_none(value: object) -> object:
    return None if value == "" else value


# Only IPs: they become the URLs we call, and a registration is not signed.
Address = Annotated[IPvAnyAddress, BeforeValidator(_text)]


class Properties(BaseModel):
    model_config = ConfigDict(extra="allow")

    path: str = "/"
    tls: str = "0"
    address: Annotated[Address | None, BeforeValidator(_empty_is_none)] = None
    """The TXT record's `address`; empty (as a device without one sends it) means none."""


class Registration(BaseModel):
    """The JSON a supervisor POSTs (protocol §1); unknown keys are ignored, as they may grow."""

    model_config = ConfigDict(extra="ignore")

    name: Annotated[str, StringConstraints(pattern=DEVICE_PATTERN, max_length=63)]
    port: int = Field(ge=1, le=65535)
    type: str = "_webthing._tcp.local."
    properties: Properties = Field(default_factory=Properties)
    addresses: list[Address] | None = Field(default=None, max_length=16)
    host: str | None = None


class Introducer(Protocol):
    def submit(self, name: str, *, addresses: list[str], port: int, tls: bool) -> None: ...


def register(introducer: Introducer) -> Callable[[Request], Awaitable[Response]]:
    """The registration endpoint, handing what it accepts to `introducer`."""

    async def endpoint(request: Request) -> Response:
        try:
            body = await limited_body(request, MAX_REGISTRATION)
        except BodyTooLarge:
            return error(413, f"a registration is at most {MAX_REGISTRATION} bytes")
        try:
            registration = Registration.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"])
            return error(400, f"invalid registration: {where}: {first['msg']}".replace(": :", ":"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return error(400, "invalid registration: the body is not JSON")
        addresses = [str(address) for address in registration.addresses or []]
        if registration.properties.address:
            addresses.append(str(registration.properties.address))
        if not addresses and request.client is not None:
            addresses = [request.client.host]  # protocol §1: use the peer's address
        introducer.submit(
            registration.name,
            addresses=list(dict.fromkeys(addresses)),
            port=registration.port,
            tls=registration.properties.tls == "1",
        )
        return Response(status_code=204)

    return endpoint
