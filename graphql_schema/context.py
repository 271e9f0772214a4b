"""The typed request context: the caller, their auth failure if any, and per-request loaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.websockets import WebSocket

from app.auth import Principal
from app.errors import AccessError, Unauthenticated
from app.participants import resident_id
from app.settings import Settings


@dataclass
class Context:
    """What every resolver may read from `info.context`."""

    request: Request | WebSocket | None
    settings: Settings
    principal: Principal | None = None
    auth_error: AccessError | None = None
    connection_params: dict[str, Any] | None = None
    loaders: dict[str, Any] = field(default_factory=dict)

    def caller(self) -> Principal:
        """The authenticated caller, or UNAUTHENTICATED."""
        if self.auth_error is not None:
            raise self.auth_error
        if self.principal is None:
            raise Unauthenticated()
        if self.principal.expired():  # a WebSocket connection outliving its token
            raise Unauthenticated("The token has expired.")
        return self.principal

    def require(self, *roles: str) -> Principal:
        """The caller, who must hold one of `roles` (FORBIDDEN otherwise)."""
        principal = self.caller()
        principal.require(*roles)
        return principal

    async def resident_id(self) -> int:
        """The calling resident's participant id, opening their account on first sight."""
        return await resident_id(self.require("resident"))

