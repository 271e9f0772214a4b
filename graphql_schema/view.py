"""The ASGI GraphQL view: builds the Context from the Authorization header or connection_init."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

from app.auth import principal_from_header
from app.errors import AccessError
from app.settings import Settings
from graphql_schema.context import Context


class PuhuiGraphQL(GraphQL):
    """strawberry's ASGI app with our context, WebSocket authentication and error status codes."""

    def __init__(self, schema: Any, settings: Settings) -> None:
        super().__init__(
            schema,
            graphql_ide=None if settings.production else "graphiql",
            allowed_origins=settings.cors_origins or ("*",),
        )
        self.settings = settings

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        """Authenticate the request; a bad token is kept and raised only where one is needed."""
        context = Context(request=request, settings=self.settings)
        if isinstance(request, Request):
            try:
                context.principal = principal_from_header(
                    request.headers.get("authorization"), self.settings
                )
            except AccessError as exc:
                context.auth_error = exc
        return context

    async def on_ws_connect(self, context: Context) -> dict[str, object] | None:
        """Accept a subscription connection only with a valid token in connection_init."""
        params = context.connection_params or {}
        header = params.get("authorization") if isinstance(params, dict) else None
        try:
            principal = principal_from_header(header if isinstance(header, str) else None,
                                              self.settings)
        except AccessError:
            raise ConnectionRejectionError() from None
        if principal is None:
            raise ConnectionRejectionError()
        context.principal = principal
        return None

    async def process_result(
        self, request: Request | WebSocket, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        """Serialize a result; requests that failed before execution answer 400."""
        data: GraphQLHTTPResponse = {"data": result.data}
        if result.errors:
            data["errors"] = [err.formatted for err in result.errors]
        if result.extensions:
            data["extensions"] = result.extensions
        return data

    def create_response(self, response_data: Any, sub_response: Response) -> Response:
        """A JSON response; 400 when the request could not be executed at all."""
        response = super().create_response(response_data, sub_response)
        if (
            isinstance(response_data, dict)
            and response_data.get("data") is None
            and response_data.get("errors")
            and not sub_response.status_code
        ):
            response.status_code = 400
        return response
