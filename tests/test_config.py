"""Settings: defaults, environment parsing, and one-line errors that name the setting."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.config import Settings, describe_error


def test_defaults() -> None:
    settings = Settings()
    assert settings.refresh_ahead_seconds == 900  # GameLift re-mints under 15 minutes left
    assert settings.min_validity_seconds == 30
    assert settings.upstream_deadline_seconds == 10
    assert settings.require_request_header is True
    assert settings.max_inflight == 256
    assert settings.allowed_hosts == [] and settings.prefetch_keys == []


def test_environment_with_prefix_and_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN_BROKER_REFRESH_AHEAD_SECONDS", "120")
    monkeypatch.setenv("TOKEN_BROKER_ALLOWED_FLEETS", "fleet-a, fleet-b")
    monkeypatch.setenv("TOKEN_BROKER_PREFETCH", "fleet-a/task-1/container-2,fleet-b/host-1")
    monkeypatch.setenv("TOKEN_BROKER_REQUIRE_REQUEST_HEADER", "false")
    settings = Settings()
    assert settings.refresh_ahead_seconds == 120
    assert settings.allowed_fleets == ["fleet-a", "fleet-b"]
    assert settings.prefetch_keys == [("fleet-a", "task-1/container-2"), ("fleet-b", "host-1")]
    assert settings.require_request_header is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TOKEN_BROKER_REFRESH_AHEAD_SECONDS", "soon"),
        ("TOKEN_BROKER_REFRESH_AHEAD_SECONDS", "-1"),
        ("TOKEN_BROKER_MAX_INFLIGHT", "0"),
        ("TOKEN_BROKER_UPSTREAM_DEADLINE_SECONDS", "0"),
        ("TOKEN_BROKER_ALLOWED_FLEETS", "fleet-a,not a fleet"),
        ("TOKEN_BROKER_PREFETCH", "fleet-a"),
        ("TOKEN_BROKER_PREFETCH", "fleet-a/a/b/c"),
        ("TOKEN_BROKER_LOG_LEVEL", "loud"),
        ("TOKEN_BROKER_ALLOWED_HOSTS", "broker.svc:8787"),
        ("TOKEN_BROKER_ALLOWED_HOSTS", "http://broker.svc"),
        ("TOKEN_BROKER_REQUIRE_REQUEST_HEADER", "maybe"),
    ],
)
def test_bad_value_names_the_setting_in_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = describe_error(caught.value)
    assert name in message
    assert "\n" not in message


def test_windows_must_nest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN_BROKER_MIN_VALIDITY_SECONDS", "900")  # the window's default
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = describe_error(caught.value)
    assert "TOKEN_BROKER_MIN_VALIDITY_SECONDS" in message and "\n" not in message


@pytest.mark.parametrize(
    ("misspelt", "meant"),
    [
        ("TOKEN_BROKER_AUTH_TOKEN_FILES", "TOKEN_BROKER_AUTH_TOKEN_FILE"),
        ("TOKEN_BROKER_ALLOWED_FLEET", "TOKEN_BROKER_ALLOWED_FLEETS"),
        ("token_broker_log_levels", "TOKEN_BROKER_LOG_LEVEL"),  # any case
        ("TOKEN_BROKER_REQUIRE_REQUEST_HEADERS", "TOKEN_BROKER_REQUIRE_REQUEST_HEADER"),
    ],
)
def test_an_unknown_setting_fails_closed_naming_the_closest(
    monkeypatch: pytest.MonkeyPatch, misspelt: str, meant: str
) -> None:
    # Each of these, silently ignored, would start a broker with a check turned off.
    monkeypatch.setenv(misspelt, "/etc/broker/secret")
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = describe_error(caught.value)
    assert message == f"unknown setting {misspelt.upper()}; did you mean {meant}?"


def test_an_unknown_setting_with_no_near_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN_BROKER_ZZZ", "1")
    monkeypatch.setenv("GAMELIFT_TOKEN_BROKER_URL", "http://127.0.0.1:8787")  # not ours
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert (
        describe_error(caught.value)
        == "unknown setting TOKEN_BROKER_ZZZ (the settings: docs/operations.md)"
    )
