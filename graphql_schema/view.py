"""The ASGI GraphQL view: GraphQL over HTTP as the spec says, our context, and coded errors.

On top of strawberry's view: every error (also the HTTP-level ones) is a JSON GraphQL error with
`extensions.code`; requests that could not be executed (unparsable, invalid, bad variables) answer
400 without a `data` key; a mutation over GET answers 405; bodies over MAX_BODY_BYTES answer 413;
`application/graphql-response+json` is served to clients that ask for it; JSON goes through orjson.

The common request, a POST of one operation as application/json, takes a direct path (see
`PuhuiGraphQL.post_json`) that answers exactly as strawberry's path does, with less work per request.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from graphql import GraphQLError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.base import BaseRequestProtocol
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from app.auth import principal_from_header_async
from app.errors import AccessError
from app.settings import Settings
from graphql_schema.context import Context

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 2 * 1024 * 1024
GRAPHQL_RESPONSE = "application/graphql-response+json"
HTTP_GET_OPERATIONS = frozenset({OperationType.QUERY})
HTTP_POST_OPERATIONS = frozenset({OperationType.QUERY, OperationType.MUTATION})
# GET parameters given with these values count as not given (the spec: an empty optional one).
_ABSENT = {"variables": ("", "null"), "extensions": ("", "null"), "operationName": ("",)}
HTTP_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


class _BodyTooLarge(Exception):
    """The request body grew past MAX_BODY_BYTES while being read."""


def _limited(receive: Receive, limit: int) -> Callable[[], Awaitable[Message]]:
    """`receive` that raises _BodyTooLarge once more than `limit` body bytes arrived."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _BodyTooLarge
        return message

    return wrapped


_Q_VALUE = re.compile(r"(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)")  # RFC 9110's qvalue
_ACCEPT_ENTRIES = 32  # entries of an Accept header read at most; the rest are ignored


def _accepted(request: Request) -> dict[str, float] | None:
    """The media types of the Accept header with their q-values (None without the header). A
    q-value that is not one (RFC 9110: 0 to 1, three decimals at most) refuses its type; a
    type listed twice takes its higher q-value."""
    header = request.headers.get("accept")
    if not header:
        return None
    accepted: dict[str, float] = {}
    for part in header.split(",", _ACCEPT_ENTRIES)[:_ACCEPT_ENTRIES]:
        media, *params = part.split(";")
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                value = value.strip()
                quality = float(value) if _Q_VALUE.fullmatch(value) else 0.0
        if media := media.strip().lower():
            accepted[media] = max(quality, accepted.get(media, 0.0))
    return accepted


def _quality(accepted: dict[str, float], media: str) -> float:
    """The q-value of `media`: its own entry, else its type's wildcard, else */*'s; 0 if none."""
    for key in (media, media.split("/")[0] + "/*", "*/*"):
        if key in accepted:
            return accepted[key]
    return 0.0


def _negotiated(request: Request) -> tuple[str, bool]:
    """The response media type, and whether the client is a legacy one (the spec wants 200 on
    request errors for those).

    graphql-response+json when the client names it and ranks it no lower than application/json
    (by q-value), else application/json. Legacy: the client accepts application/json and not
    graphql-response+json, by name or by a wildcard.
    """
    accepted = _accepted(request)
    if accepted is None:
        return "application/json", False
    named = accepted.get(GRAPHQL_RESPONSE, 0.0)
    json_quality = _quality(accepted, "application/json")
    if named > 0.0 and named >= json_quality:
        return GRAPHQL_RESPONSE, False
    legacy = accepted.get("application/json", 0.0) > 0.0 and _quality(accepted, GRAPHQL_RESPONSE) <= 0.0
    return "application/json", legacy


def _status(response_data: Any, legacy_json: bool, status: int) -> int:
    """`status`, unless the request could not be executed (no `data`): then 500 for a crash, else
    400 (kept for clients that accept only application/json, as the GraphQL-over-HTTP spec asks)."""
    if isinstance(response_data, dict) and "data" not in response_data:
        codes = {e.get("extensions", {}).get("code") for e in response_data.get("errors", ())}
        if "INTERNAL_SERVER_ERROR" in codes:
            return 500
        if not legacy_json:
            return 400
    return status


def _content_media(request: Request) -> str:
    """The media type of the request body, lowercased, without parameters such as charset."""
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def _json_post(request: Request) -> bool:
    """True for a POST of application/json (with or without parameters such as charset)."""
    return request.method == "POST" and _content_media(request) == "application/json"


def _operation(data: object) -> GraphQLRequestData | None:
    """The operation of a request body that is one, with the types strawberry checks; else None."""
    if not isinstance(data, dict):
        return None
    query, variables, extensions = data.get("query"), data.get("variables"), data.get("extensions")
    if (isinstance(query, str | None) and isinstance(variables, dict | None)
            and isinstance(extensions, dict | None)):
        return GraphQLRequestData(query, variables, data.get("operationName"), extensions)
    return None


class _JSONResponse:
    """A finished JSON response sent as two raw ASGI messages, with the headers (and their order)
    of the starlette Response strawberry's path sends: content-length, content-type."""

    __slots__ = ("body", "media_type", "status")

    def __init__(self, status: int, media_type: str, body: bytes) -> None:
        self.status = status
        self.media_type = media_type
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the response."""
        headers = [(b"content-length", str(len(self.body)).encode()),
                   (b"content-type", self.media_type.encode())]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def _formatted(error: GraphQLError, production: bool) -> dict[str, Any]:
    """The error as JSON, coded even when it escaped ErrorCodes (an extension's own parse error)."""
    out = error.formatted
    extensions = out.get("extensions") or {}
    if "code" in extensions:
        return out
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        out["extensions"] = {**extensions, "code": "BAD_REQUEST"}
        return out
    log.error("unexpected error before execution", exc_info=original)
    out["message"] = "Unexpected error." if production else f"Unexpected error: {type(original).__name__}"
    out["extensions"] = {"code": "INTERNAL_SERVER_ERROR"}
    return out


_NOT_A_MESSAGE = "A message is an object with a string type, and an id and a query where needed."
_UNAUTHENTICATED_CONNECTION: dict[str, object] = {
    "message": "A valid token is needed in connection_init's payload (authorization: Bearer ...).",
    "extensions": {"code": "UNAUTHENTICATED"},
}


def _an_operation(payload: object) -> bool:
    """True for an operation strawberry can run over WebSocket: one as an HTTP body would be
    (`_operation`), with a query and an operationName that is a string where given."""
    operation = _operation(payload)
    return (operation is not None and isinstance(operation.query, str)
            and isinstance(operation.operation_name, str | None))


def _a_message(message: object, starts: str, names: frozenset[str]) -> bool:
    """True for what strawberry's WebSocket handlers can read: an object with a string type;
    with a string id when its type names an operation (`names`), and an operation as its
    payload when it starts one (`starts`)."""
    if not isinstance(message, dict) or not isinstance(kind := message.get("type"), str):
        return False
    if kind in names and not isinstance(message.get("id"), str):
        return False
    return kind != starts or _an_operation(message.get("payload"))


_CLOSE_REASON_BYTES = 123  # what a close frame holds


class _ShortCloseReasons:
    """A WebSocket adapter whose close reasons fit a close frame: strawberry writes a client's
    message type, operation id or syntax error into some, and a longer one failed to send."""

    def __init__(self, websocket: Any) -> None:
        self._websocket = websocket

    def __getattr__(self, name: str) -> Any:
        return getattr(self._websocket, name)

    async def close(self, code: int, reason: str | None = None) -> None:
        """Close with `reason` cut to 123 bytes of UTF-8, at a character boundary."""
        cut = (reason or "").encode()[:_CLOSE_REASON_BYTES].decode(errors="ignore")
        await self._websocket.close(code=code, reason=cut)


class _ReadableMessages:
    """What both WebSocket handlers add to strawberry's: close reasons that fit a close frame,
    and a 4400 close for a message strawberry cannot read (it indexed it and died with a
    traceback). `starts` is the type that starts an operation, `names` the types naming one."""

    starts: str
    names: frozenset[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.websocket = _ShortCloseReasons(self.websocket)

    async def handle_message(self, message: Any) -> None:
        """Handle a well-formed message; close the connection with 4400 on anything else."""
        if not _a_message(message, self.starts, self.names):
            await self.websocket.close(code=4400, reason=_NOT_A_MESSAGE)
            return
        await super().handle_message(message)  # type: ignore[misc]


class _TransportWSHandler(_ReadableMessages, BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws, with readable messages only."""

    starts, names = "subscribe", frozenset({"subscribe", "complete"})


class _LegacyWSHandler(_ReadableMessages, BaseGraphQLWSHandler[Context, None]):
    """The legacy graphql-ws protocol, with readable messages only."""

    starts, names = "start", frozenset({"start", "stop"})


class PuhuiGraphQL(GraphQL):
    """strawberry's ASGI app with our context, WebSocket authentication and HTTP semantics."""

    graphql_transport_ws_handler_class = _TransportWSHandler
    graphql_ws_handler_class = _LegacyWSHandler

    def __init__(self, schema: Any, settings: Settings) -> None:
        super().__init__(
            schema,
            graphql_ide=None if settings.production else "graphiql",
            allowed_origins=settings.cors_origins or ("*",),
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
        )
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request or WebSocket; HTTP failures become coded JSON errors.

        A POST of application/json takes the direct path (post_json); everything else (GET, GraphiQL,
        other media types, other methods, WebSocket) takes strawberry's."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive=_limited(receive, MAX_BODY_BYTES))
        try:
            declared = int(request.headers.get("content-length") or 0)
        except ValueError:
            declared = 0
        try:
            if declared > MAX_BODY_BYTES:
                raise _BodyTooLarge
            if request.method == "POST" and _content_media(request) != "application/json":
                raise HTTPException(415, "A GraphQL request is posted as application/json.")
            response = await (self.post_json(request) if _json_post(request) else self.run(request))
        except _BodyTooLarge:
            response = self.error_response(request, 413, f"The body exceeds {MAX_BODY_BYTES} bytes.")
        except HTTPException as exc:
            response = self.error_response(request, exc.status_code, exc.reason)
        except ClientDisconnect:
            log.info("the client disconnected before its request arrived whole")
            return
        await response(scope, receive, send)

    async def post_json(self, request: Request) -> Response | _JSONResponse:
        """A POST of one operation as JSON, on a direct path: strawberry's hooks in the same order
        (root value, context, body, execution, result), without its adapters and Response objects.

        A body that is not one well-typed operation (unparsable, not an object, a batch) goes on to
        strawberry's path with the same context, which answers it as it always has."""
        root_value = await self.get_root_value(request)
        context = await self.get_context(request, response=None)
        body = await request.body()
        try:
            operation = _operation(self.decode_json(body))
        except json.JSONDecodeError:
            operation = None
        if operation is None:
            return await self.run(request, context=context, root_value=root_value)
        result = await self.execute_allowed(operation, context, root_value, HTTP_POST_OPERATIONS)
        response_data = await self.process_result(request, result)
        if result.errors:
            self._handle_errors(result.errors, response_data)
        media_type, legacy = _negotiated(request)
        status = _status(response_data, legacy, 200)
        return _JSONResponse(status, media_type, self.encode_json(response_data))

    def error_response(self, request: Request, status: int, message: str) -> Response:
        """A GraphQL error response for a request that was not executed."""
        code = HTTP_CODES.get(status, "BAD_REQUEST")
        body = {"errors": [{"message": message, "extensions": {"code": code}}]}
        headers = {"allow": "POST" if request.method == "GET" else "GET, POST"} if status == 405 else None
        return Response(orjson.dumps(body), status_code=status, headers=headers,
                        media_type=_negotiated(request)[0])

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        """GraphiQL for browsers, only where it is enabled (never in production)."""
        return self.graphql_ide is not None and super().should_render_graphql_ide(request)

    def parse_json(self, data: str | bytes) -> Any:
        """A request's JSON (body, or GET variables): an object, else 400 (strawberry would crash)."""
        value = super().parse_json(data)
        if not isinstance(value, dict | list):
            raise HTTPException(400, "Expected a JSON object.")
        return value

    def parse_query_params(self, params: Any) -> dict[str, Any]:
        """GET parameters; an empty (or, for variables and extensions, null) optional one counts
        as not given, as the spec says."""
        given = {name: value for name, value in dict(params).items()
                 if value not in _ABSENT.get(name, ())}
        return super().parse_query_params(given)

    def decode_json(self, data: str | bytes) -> object:
        """Parse JSON with orjson (its errors are json.JSONDecodeError, so they answer 400)."""
        return orjson.loads(data)

    def encode_json(self, data: object) -> bytes:
        """Serialize JSON with orjson."""
        return orjson.dumps(data)

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        """Authenticate the request; a bad token is kept and raised only where one is needed."""
        context = Context(request=request, settings=self.settings)
        if isinstance(request, Request):
            try:
                context.principal = await principal_from_header_async(
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
            principal = await principal_from_header_async(
                header if isinstance(header, str) else None, self.settings
            )
        except AccessError:
            principal = None
        if principal is None:
            # graphql-transport-ws closes with 4403; the legacy protocol sends this payload in
            # its connection_error message before closing.
            raise ConnectionRejectionError(_UNAUTHENTICATED_CONNECTION)
        context.principal = principal
        return None

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: Any,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Execute one operation: queries over GET, queries and mutations over POST.

        A mutation over GET answers 405 (Allow: POST); subscriptions are served over WebSocket only.
        """
        get = request_adapter.method == "GET"
        allowed = HTTP_GET_OPERATIONS if get else HTTP_POST_OPERATIONS
        return await self.execute_allowed(request_data, context, root_value, allowed)

    async def execute_allowed(
        self,
        request_data: GraphQLRequestData,
        context: Context,
        root_value: Any,
        allowed: frozenset[OperationType],
    ) -> ExecutionResult:
        """Execute one operation of an `allowed` type; a request that cannot run raises HTTPException
        (400, or 405 for a mutation where only queries are allowed, i.e. over GET)."""
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request_data.extensions,
            )
        except CannotGetOperationTypeError as exc:
            # A request error like a failed validation: 400, or 200 for a legacy client.
            return ExecutionResult(data=None, errors=[GraphQLError(exc.as_http_error_reason())])
        except InvalidOperationTypeError as exc:
            if exc.operation_type == OperationType.SUBSCRIPTION:
                raise HTTPException(
                    400, "Subscriptions are served over WebSocket (graphql-transport-ws) at /graphql."
                ) from None
            raise HTTPException(405, "Only queries may be sent with GET; use POST.") from None
        except MissingQueryError:
            raise HTTPException(400, "No GraphQL query found in the request.") from None

    async def process_result(
        self, request: Request | WebSocket, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        """Serialize a result; a request that was never executed carries no `data` key."""
        body: GraphQLHTTPResponse = {}
        if result.errors:
            errors = [_formatted(err, self.settings.production) for err in result.errors]
            if result.data is not None or any(err.path for err in result.errors):
                body["data"] = result.data
            body["errors"] = errors
        else:
            body["data"] = result.data
        if result.extensions:
            body["extensions"] = result.extensions
        return body

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        """The response under construction, remembering which media type the client accepts."""
        sub_response = await super().get_sub_response(request)
        if isinstance(request, Request):
            sub_response.media_type, legacy = _negotiated(request)
            sub_response.legacy_json = legacy  # type: ignore[attr-defined]
        return sub_response

    def create_response(self, response_data: Any, sub_response: Response) -> Response:
        """The JSON response: 400 for a request that could not be executed (200 for clients that
        accept only application/json, as the GraphQL-over-HTTP spec asks), 500 for a crash."""
        status = _status(response_data, getattr(sub_response, "legacy_json", False),
                         sub_response.status_code or 200)
        response = Response(self.encode_json(response_data), status_code=status,
                            media_type=sub_response.media_type or "application/json")
        response.headers.raw.extend(sub_response.headers.raw)
        if sub_response.background:
            response.background = sub_response.background
        return response
