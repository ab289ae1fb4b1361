"""Refusals are counted without bound but logged within a budget: a flood is one summary line."""

from __future__ import annotations

import logging

import pytest

from service.ops.log_budget import LINES_PER_INTERVAL, LogBudget
from tests.helpers import RawConnection, eventually, request_head


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "token request refused"]


async def test_a_flood_of_refusals_writes_a_bounded_number_of_lines(
    start_broker,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="service.requests")
    async with start_broker(require_request_header=True) as broker:
        connection = await RawConnection.open(broker.url)
        try:
            # No guard header: what a hostile web page can send. Pipelined, 100 at a time, so a
            # loaded machine spends its time answering, not on round trips.
            for _ in range(30):
                connection.write(request_head("/fleets/fleet-1/computes/c/token") * 100)
                for _ in range(100):
                    status, _ = await connection.read_answer()
                    assert status == 403
        finally:
            await connection.close()
        assert broker.app.state.recorder.counts["error"] == 3000  # the metrics miss none
    assert len(refusal_lines(caplog)) == LINES_PER_INTERVAL


async def test_dropped_lines_are_reported_when_the_interval_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("tests.budget")
    caplog.set_level(logging.INFO, logger="tests.budget")
    budget = LogBudget(log, lines=3, interval=0.3)
    assert [budget.allow("Forbidden") for _ in range(25)] == [True] * 3 + [False] * 22
    assert budget.allow("HostNotAllowed")  # each reason has its own budget

    def reported() -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "event", "") == "lines_dropped"]

    await eventually(lambda: bool(reported()), what="the summary line")
    (summary,) = reported()
    assert summary.dropped == 22 and summary.code == "Forbidden"  # type: ignore[attr-defined]
    assert budget.allow("Forbidden")  # a new interval, a new budget
    assert len(reported()) == 1
