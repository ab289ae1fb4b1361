"""TOKEN_BROKER_OPS_PORT: probes and metrics on their own listener, which serves no token."""

from __future__ import annotations

import httpx

from tests.processes import broker_process

GUARD = {"X-Token-Broker-Request": "true"}


def test_ops_listener_serves_probes_and_metrics_only() -> None:
    with broker_process(
        "--emulator", "--port", "0", TOKEN_BROKER_OPS_PORT="0", TOKEN_BROKER_OPS_HOST="127.0.0.1"
    ) as process:
        ops = str(process.start_line()["ops_listener"])
        process.wait_for_line('"event": "ready"')
        url = process.url()
        assert ops != url
        with httpx.Client(base_url=ops, timeout=10) as client:
            assert client.get("/healthz").json() == {"status": "ok"}
            assert client.get("/readyz").json() == {"status": "ready"}
            metrics = client.get("/metrics")
            token = client.get("/fleets/fleet-1/computes/c/token", headers=GUARD)
            docs = client.get("/openapi.json")
        # The token listener still answers both, as before.
        assert httpx.get(f"{url}/fleets/fleet-1/computes/c/token", headers=GUARD).status_code == 200
        assert httpx.get(f"{url}/readyz").status_code == 200
    assert metrics.status_code == 200 and "gamelift_token_broker_build_info" in metrics.text
    # The token request counted on the token listener is the only one.
    assert 'token_broker_requests_total{outcome="miss"} 0.0' in metrics.text
    assert token.status_code == 404 and "AuthToken" not in token.text
    assert docs.status_code == 404


def test_no_ops_listener_unless_asked() -> None:
    with broker_process("--emulator", "--port", "0") as process:
        assert process.start_line()["ops_listener"] is None
