"""create_app(): routes, lifespan and wiring of the HTTP service."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from app import logs
from app.db import close_db, init_db
from app.events import drain_after_commit
from app.health import health
from app.jobs import start_jobs, stop_jobs
from app.redis import get_store
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)


def _healthz(settings: Settings) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def healthz(request: Request) -> JSONResponse:
        """200 when the database (and Redis, when configured) answer; 503 otherwise."""
        healthy, checks = await health(settings)
        return JSONResponse({"status": "ok" if healthy else "unhealthy", **checks},
                            status_code=200 if healthy else 503,
                            headers={"cache-control": "no-store"})

    return healthz


class Service(Starlette):
    """The service: Starlette's routes and middleware, except that a POST to /graphql (what every
    app sends) goes straight to the GraphQL view when no middleware wraps the routes; the view
    answers every failure itself, so the error and routing layers would only pass it through."""

    def __init__(self, graphql: ASGIApp, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._graphql = None if self.user_middleware else graphql

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection or lifespan."""
        if (self._graphql is not None and scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"] == scope.get("root_path", "") + "/graphql"):
            scope["app"] = self
            await self._graphql(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, manage_db: bool = True) -> Starlette:
    """The ASGI application; `manage_db=False` when the caller opens the database itself."""
    settings = settings or get_settings()
    logs.configure(settings.log_level)  # each worker process sets up its own logging
    from graphql_schema.schema import schema
    from graphql_schema.view import PuhuiGraphQL
    from mall.redeeming import finish_lanes
    from mall.stock_gate import start_count, tell_lost_marks
    from registry.ingest import ingest_scenario_records

    graphql = PuhuiGraphQL(schema, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_db:
            await init_db(settings)
        get_store(settings)
        # A store without the stock gate's count of replay marks starts it before any
        # redemption: a day back when none was made in the last day, now otherwise.
        await start_count()
        # What startup built (schema, models, caches) lives as long as the process: keep it out
        # of every later collection, or a full collection costs ~80 ms of one request's latency.
        # A larger young generation lets a request's short-lived cycles die young instead of
        # being promoted and swept by slow full collections (MyAccount bench: ratio 0.48 -> 0.58).
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        jobs = start_jobs()
        try:
            yield
        finally:
            await stop_jobs(jobs)
            await finish_lanes()  # redemptions under way deliver, and queue their after-commit work
            await tell_lost_marks()
            await drain_after_commit()  # queued after-commit work, before the stores close
            if manage_db:
                await close_db()

    routes = [
        Route("/healthz", _healthz(settings), methods=["GET"]),
        Route("/graphql", graphql),  # the view answers other methods with a coded 405
        WebSocketRoute("/graphql", graphql),
        Route("/ingest/scenarios/{code}/records", ingest_scenario_records, methods=["POST"]),
    ]
    middleware = [
        Middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                   allow_methods=["GET", "POST"], allow_headers=["authorization", "content-type"],
                   max_age=600)
    ] if settings.cors_origins else []
    return Service(graphql, routes=routes, lifespan=lifespan, middleware=middleware,
                   exception_handlers={405: _method_not_allowed})


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    """A route's 405 as a coded JSON error, with the Allow header of the route."""
    headers = exc.headers if isinstance(exc, HTTPException) else None
    return JSONResponse({"code": "METHOD_NOT_ALLOWED",
                         "message": f"{request.method} is not allowed here."}, 405, headers=headers)
