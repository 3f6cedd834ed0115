"""The assistant's generation gate: a bounded number of answers at once, a bounded queue, busy instead of waiting
without bound."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from taskfit.serve.gate import Busy, Done, Gate


def test_the_gate_says_busy_instead_of_queueing_without_bound():
    gate = Gate(slots=1, max_waiting=0, wait_timeout=5)
    release = threading.Event()

    async def scenario():
        first = gate.stream(lambda emit: (release.wait(5), "first")[1], 10)
        started = asyncio.ensure_future(anext(first))
        await asyncio.sleep(0.2)
        assert gate.stats()["running"] == 1
        with pytest.raises(Busy):
            await anext(gate.stream(lambda emit: "second", 10))
        release.set()
        event = await started
        assert event == Done("first")

    # on a thread of its own: Playwright's sync API may keep an event loop running on the main thread
    failure: list[BaseException] = []
    runner = threading.Thread(target=lambda: _capture(failure, lambda: asyncio.run(scenario())))
    runner.start()
    runner.join(30)
    assert not failure, failure
    deadline = time.time() + 5
    while gate.stats()["running"] and time.time() < deadline:
        time.sleep(0.01)
    assert gate.stats() == {"slots": 1, "running": 0, "waiting": 0}


def _capture(failures: list[BaseException], work) -> None:
    try:
        work()
    except BaseException as exc:  # noqa: BLE001 - re-raised by the test on its own thread
        failures.append(exc)
