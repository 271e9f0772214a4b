# The puhui API image: `puhui serve` by default; `puhui migrate` for the one-shot migrate service.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv/puhui
COPY pyproject.toml README.md ./
COPY app ./app
COPY graphql_schema ./graphql_schema
COPY registry ./registry
COPY points ./points
COPY mall ./mall
COPY migrations ./migrations
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /srv/puhui puhui

USER puhui
EXPOSE 8000
CMD ["puhui", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
