"""The service's log lines: one format and level, set up in every process that serves or runs."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure(level: str) -> None:
    """Send records at `level` and above to stderr in the service's format, unless this process
    already has handlers (a worker uvicorn spawns starts without the parent's)."""
    logging.basicConfig(level=level, format=FORMAT)
