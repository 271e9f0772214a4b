"""docker-compose.yml (it cannot run here): its YAML parses, its wiring is right, and the
environment it gives puhui passes the settings checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from app.settings import SettingsError, load_settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${NAME:-default} interpolation, for the forms this file uses."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m.group(1), m.group(2)), value)


def test_services_and_their_order():
    services = _compose()["services"]
    assert set(services) == {"postgres", "redis", "migrate", "api"}
    assert services["migrate"]["command"] == ["puhui", "migrate"]
    assert services["migrate"]["restart"] == "no"
    assert services["api"]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["api"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert services["api"]["depends_on"]["redis"] == {"condition": "service_healthy"}
    command = services["api"]["command"]
    assert command[:2] == ["puhui", "serve"]
    assert command[command.index("--workers") + 1] == "2"
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"]


def test_the_compose_environment_passes_the_settings_checks():
    services = _compose()["services"]
    assert services["api"]["environment"] == services["migrate"]["environment"]
    raw = services["api"]["environment"]
    development = {k: _interpolate(str(v), {"PUHUI_ENV": "development"}) for k, v in raw.items()}
    settings = load_settings(development)
    assert settings.database_url == "postgres://puhui:puhui@postgres:5432/puhui"
    assert settings.redis_url == "redis://redis:6379/0"
    idp = {"PUHUI_JWT_JWKS_URL": "https://idp.example/jwks", "PUHUI_JWT_ISSUER": "https://idp.example",
           "PUHUI_JWT_AUDIENCE": "puhui"}
    production = {k: _interpolate(str(v), idp) for k, v in raw.items()}
    settings = load_settings(production)
    assert settings.production
    assert (settings.jwt_issuer, settings.jwt_audience) == ("https://idp.example", "puhui")
    assert settings.jwt_secret is None
    # Without the tokens' issuer and audience, production stops with a reason naming them.
    for missing in ("PUHUI_JWT_ISSUER", "PUHUI_JWT_AUDIENCE"):
        partial = {k: _interpolate(str(v), {**idp, missing: ""}) for k, v in raw.items()}
        with pytest.raises(SettingsError, match="PUHUI_JWT_ISSUER and PUHUI_JWT_AUDIENCE"):
            load_settings(partial)


def test_the_api_listens_on_the_hosts_loopback_unless_told_otherwise():
    [port] = _compose()["services"]["api"]["ports"]
    assert _interpolate(port, {}) == "127.0.0.1:8000:8000"
    assert _interpolate(port, {"PUHUI_BIND": "0.0.0.0", "PUHUI_PORT": "9000"}) == "0.0.0.0:9000:8000"
