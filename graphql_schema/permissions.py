"""Permission classes for root fields: who may call what (ownership is checked in services)."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission
from strawberry.types import Info


class SignedIn(BasePermission):
    """Any valid token."""

    message = "A valid token is required."

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        """Raise UNAUTHENTICATED unless the request carries a valid token."""
        info.context.caller()
        return True


def roles(*names: str) -> type[BasePermission]:
    """A permission class admitting only callers with one of `names` (built once, at import)."""

    class HasRole(BasePermission):
        message = "Your role may not do this."

        def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
            info.context.require(*names)
            return True

    HasRole.__name__ = "Role_" + "_".join(names)
    return HasRole


Resident = roles("resident")
Center = roles("center")
Regulator = roles("regulator")
CenterOrExchange = roles("center", "exchange")
CenterOrRegulator = roles("center", "regulator")
ScenarioOperator = roles("scenario_operator")
Merchant = roles("merchant")
MethodologySubmitter = roles("scenario_operator", "project_developer", "center")
