"""The launcher's retry loop on an injected clock: how long it waits, and when it gives up."""

from __future__ import annotations

import pytest

from service.launch import client


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


class ScriptedBroker(client.Broker):
    """Answers from a list (an exception instance is raised); the last one repeats."""

    def __init__(self, *answers: client.Response | OSError) -> None:
        super().__init__()
        self.answers = list(answers)
        self.asked = 0

    def get(self, path: str, timeout: float) -> client.Response:
        self.asked += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, OSError):
            raise answer
        return answer


OK = client.Response(200, None, b'{"AuthToken": "t"}')


def busy(retry_after: float | None) -> client.Response:
    return client.Response(503, retry_after, b'{"error": {"code": "X", "message": "busy"}}')


def fetch(broker: client.Broker, clock: FakeClock, timeout: float) -> dict[str, object]:
    return client.fetch(
        broker, "/p", timeout=timeout, clock=clock, sleep=clock.sleep, jitter=lambda a, b: b
    )


def test_retry_after_is_waited_exactly() -> None:
    clock = FakeClock()
    assert fetch(ScriptedBroker(busy(3), busy(1), OK), clock, timeout=60) == {"AuthToken": "t"}
    assert clock.sleeps == [3, 1]


def test_without_retry_after_the_wait_doubles_up_to_its_cap() -> None:
    clock = FakeClock()
    refused = ConnectionRefusedError(111, "Connection refused")
    with pytest.raises(client.Unavailable, match="Connection refused; gave up after 10 s"):
        fetch(ScriptedBroker(refused), clock, timeout=10)
    assert clock.sleeps[:6] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    assert max(clock.sleeps) == client.MAX_DELAY
    assert sum(clock.sleeps) <= 10


def test_the_wait_is_jittered_within_its_step() -> None:
    clock = FakeClock()
    draws: list[tuple[float, float]] = []

    def jitter(low: float, high: float) -> float:
        draws.append((low, high))
        return low

    broker = ScriptedBroker(busy(None), busy(None), OK)
    client.fetch(broker, "/p", timeout=60, clock=clock, sleep=clock.sleep, jitter=jitter)
    assert draws == [(0.05, 0.1), (0.1, 0.2)]
    assert clock.sleeps == [0.05, 0.1]


def test_a_retry_after_past_the_deadline_gives_up_at_once() -> None:
    clock = FakeClock()
    broker = ScriptedBroker(busy(30))
    with pytest.raises(client.Unavailable, match="503 X: busy; gave up after 5 s"):
        fetch(broker, clock, timeout=5)
    assert clock.sleeps == [] and broker.asked == 1


def test_a_refusal_is_not_retried() -> None:
    clock = FakeClock()
    broker = ScriptedBroker(client.Response(404, None, b'{"error": {"code": "NotFound"}}'))
    with pytest.raises(client.Refused, match="404 NotFound"):
        fetch(broker, clock, timeout=60)
    assert broker.asked == 1 and clock.sleeps == []


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf"])
def test_a_retry_after_that_is_not_seconds_is_ignored(value: str) -> None:
    assert client._retry_after(value) is None
    assert client._retry_after("2") == 2.0
