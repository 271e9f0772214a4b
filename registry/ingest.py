"""Streaming NDJSON ingestion of scenario records."""

from starlette.requests import Request
from starlette.responses import JSONResponse


async def ingest_scenario_records(request: Request) -> JSONResponse:
    """Not built yet."""
    return JSONResponse({"error": "not implemented"}, status_code=501)
