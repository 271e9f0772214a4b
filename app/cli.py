"""`puhui serve | migrate | schema | token | ledger verify | calendar load | jobs run-once | demo`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable

from app import listening, logs
from app.settings import Settings, SettingsError, get_settings

log = logging.getLogger("puhui")


def _fail(message: str, code: int = 2) -> None:
    sys.stderr.write(f"puhui: {message}\n")
    raise SystemExit(code)


def _check_database(settings: Settings, migrated: bool = True) -> None:
    """Stop with one line (exit 1) unless the database answers and, if `migrated`, is migrated."""
    from app.preflight import PreflightError, check_database

    try:
        asyncio.run(check_database(settings, migrated=migrated))
    except PreflightError as exc:
        _fail(str(exc), code=1)


def _check_development_tokens(settings: Settings) -> None:
    """Stop with one line unless this process may sign development tokens."""
    if settings.production:
        _fail("development tokens are refused when PUHUI_ENV=production")
    if not settings.jwt_secret or settings.jwt_public_key or settings.jwt_jwks_url:
        _fail("development tokens need PUHUI_JWT_SECRET and no PUHUI_JWT_PUBLIC_KEY or "
              "PUHUI_JWT_JWKS_URL: with either, the service accepts only the identity provider's tokens")


def _run_with_db(work: Callable[[], Awaitable[int]]) -> int:
    from app.db import close_db, init_db
    from app.events import drain_after_commit

    _check_database(get_settings())

    async def main() -> int:
        await init_db()
        try:
            return await work()
        finally:
            await drain_after_commit()  # what the command queued, before the database closes
            await close_db()

    return asyncio.run(main())


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the API with uvicorn."""
    import uvicorn

    from app import accepting

    settings = get_settings()
    workers = args.workers
    if settings.is_sqlite and workers != 1:
        log.warning("SQLite serves with one worker; ignoring --workers %d", workers)
        workers = 1
    if workers > 1 and not settings.redis_url:
        # Subscriptions, stock gates, cached pages and the jobs lease must be shared by the
        # workers; the in-process stand-in would give each its own.
        _fail(f"--workers {workers} needs PUHUI_REDIS_URL: without Redis, serve with one worker")
    _check_database(settings)
    config = uvicorn.Config(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=workers,
        log_level=settings.log_level.lower(),
        access_log=False,
        proxy_headers=True,
        # uvloop and httptools: uvicorn[standard] installs both; named so a missing one fails
        # loudly. Workers sharing the sockets take their connections in turn (app.accepting).
        loop=accepting.loop_setting(workers),
        http="httptools",
    )
    try:
        sockets = listening.bind(args.host, args.port, config.backlog)
    except OSError as exc:
        _fail(f"cannot listen on {listening.where(args.host, args.port)}: {exc.strerror}", code=1)
    return listening.serve(config, sockets)


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply every pending migration."""
    from app.db import run_migrations

    _check_database(get_settings(), migrated=False)
    asyncio.run(run_migrations())
    sys.stdout.write("migrations applied\n")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the SDL of the served schema."""
    from graphql_schema.schema import schema

    sys.stdout.write(schema.as_str() + "\n")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Print a development token."""
    from app.auth import ORG_ROLES, ROLES, decode_token, issue_token
    from app.errors import Unauthenticated

    settings = get_settings()
    _check_development_tokens(settings)
    roles = [r.strip() for r in args.role.split(",") if r.strip()]
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        _fail(f"unknown role {unknown[0]!r}; roles are {', '.join(sorted(ROLES))}")
    if any(r in ORG_ROLES for r in roles) and not args.org:
        _fail("organisation roles need --org CODE")
    if args.ttl < 1:
        _fail(f"--ttl must be a positive number of seconds, got {args.ttl}")
    issued = issue_token(args.sub, roles, org=args.org, ttl_seconds=args.ttl)
    try:
        decode_token(issued, settings)  # the service's own rules for sub and org
    except Unauthenticated as exc:
        _fail(f"the service would refuse this token: {exc.message}")
    sys.stdout.write(issued + "\n")
    return 0


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    """Re-add the ledger; exit 1 on any difference."""
    from app.ledger.verify import verify

    async def work() -> int:
        report = await verify()
        sys.stdout.write(json.dumps({
            "ok": report.ok,
            "accounts": report.accounts,
            "transfers": report.transfers,
            "totals": report.totals.__dict__,
            "problems": report.problems[:100],
        }, indent=2) + "\n")
        return 0 if report.ok else 1

    return _run_with_db(work)


def cmd_calendar_load(args: argparse.Namespace) -> int:
    """Load a regulator's holiday calendar for one year from a JSON file."""
    from app.calendar import load_calendar_file
    from app.errors import DomainError

    async def work() -> int:
        try:
            year = await load_calendar_file(args.file, loaded_by=args.by)
        except DomainError as exc:
            sys.stderr.write(f"puhui: {exc.message}\n")
            return 2
        sys.stdout.write(f"calendar for {year} loaded\n")
        return 0

    return _run_with_db(work)


def cmd_jobs_run_once(args: argparse.Namespace) -> int:
    """Run every periodic job once (voucher expiry and the like)."""
    from app.jobs import run_all_once

    async def work() -> int:
        done = await run_all_once()
        sys.stdout.write(json.dumps(done) + "\n")
        return 0

    return _run_with_db(work)


def cmd_demo(args: argparse.Namespace) -> int:
    """Load the demo data once and print tokens to try the API."""
    from app.demo import load_demo

    settings = get_settings()
    if settings.production:
        _fail("demo data is refused when PUHUI_ENV=production")
    _check_development_tokens(settings)

    async def work() -> int:
        for line in await load_demo():
            sys.stdout.write(line + "\n")
        return 0

    return _run_with_db(work)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="puhui", description="puhui carbon-inclusion backend")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("migrate", help="bring the database schema up to date").set_defaults(
        func=cmd_migrate
    )
    sub.add_parser("schema", help="print the GraphQL SDL").set_defaults(func=cmd_schema)

    token = sub.add_parser("token", help="print a development token")
    token.add_argument("--sub", required=True)
    token.add_argument("--role", required=True, help="a role, or several separated by commas")
    token.add_argument("--org", default=None)
    token.add_argument("--ttl", type=int, default=7 * 24 * 3600)
    token.set_defaults(func=cmd_token)

    ledger = sub.add_parser("ledger", help="ledger tools").add_subparsers(
        dest="ledger_command", required=True
    )
    ledger.add_parser("verify", help="re-add the ledger and check conservation").set_defaults(
        func=cmd_ledger_verify
    )

    calendar = sub.add_parser("calendar", help="working-day calendars").add_subparsers(
        dest="calendar_command", required=True
    )
    load = calendar.add_parser("load", help="load a year's holiday calendar from JSON")
    load.add_argument("file")
    load.add_argument("--by", default="regulator-cli")
    load.set_defaults(func=cmd_calendar_load)

    jobs = sub.add_parser("jobs", help="periodic jobs").add_subparsers(
        dest="jobs_command", required=True
    )
    jobs.add_parser("run-once", help="run every periodic job once").set_defaults(
        func=cmd_jobs_run_once
    )

    sub.add_parser("demo", help="load demo data once and print tokens").set_defaults(
        func=cmd_demo
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `puhui` command."""
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except SettingsError as exc:
        _fail(str(exc))
    logs.configure(settings.log_level)
    if args.command == "serve" and (args.workers < 1 or args.workers > 64):
        _fail("--workers must be between 1 and 64")
    if args.command == "serve" and not 1 <= args.port <= 65535:
        _fail("--port must be between 1 and 65535")
    raise SystemExit(args.func(args))
