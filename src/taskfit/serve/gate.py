"""A cap on answers generated at once, with a bounded queue: the page and the ``/v1`` API share one.

The model call is blocking, so it runs on a worker thread; its text deltas reach the event loop through an asyncio
queue. A slot is held until the worker thread ends, even when the client went away or the answer timed out, so the
cap counts what the machine really runs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any


class Busy(Exception):
    """No generation slot within the wait limit, or the queue is full."""


@dataclass(frozen=True)
class Delta:
    """More text of the answer."""

    text: str


@dataclass(frozen=True)
class Done:
    """The worker finished: its result (the last event)."""

    result: Any


@dataclass(frozen=True)
class Failed:
    """The worker raised, or the answer ran out of time (the last event)."""

    error: BaseException


Event = Delta | Done | Failed


class Gate:
    def __init__(self, slots: int, max_waiting: int, wait_timeout: float):
        self.slots, self.max_waiting, self.wait_timeout = slots, max_waiting, wait_timeout
        self._free = threading.BoundedSemaphore(slots)
        self._waiting = 0
        self._lock = threading.Lock()
        self.running = 0

    def stats(self) -> dict[str, int]:
        return {"slots": self.slots, "running": self.running, "waiting": self._waiting}

    async def _acquire(self) -> None:
        with self._lock:
            if self._free.acquire(blocking=False):
                self.running += 1
                return
            if self._waiting >= self.max_waiting:
                raise Busy(f"{self._waiting} requests are already waiting for the model; try again shortly")
            self._waiting += 1
        try:
            got = await asyncio.to_thread(self._free.acquire, True, self.wait_timeout)
        finally:
            with self._lock:
                self._waiting -= 1
        if not got:
            raise Busy(f"no generation slot freed within {self.wait_timeout:g} s; try again shortly")
        with self._lock:
            self.running += 1

    def _release(self) -> None:
        with self._lock:
            self.running -= 1
        self._free.release()

    async def stream(self, work: Callable[[Callable[[str], None]], Any], timeout: float) -> AsyncIterator[Event]:
        """Run ``work(emit)`` on a worker thread once a slot is free; yield its deltas, then its result or error.
        Raises :class:`Busy` before anything is yielded when no slot comes free."""
        await self._acquire()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event] = asyncio.Queue()

        def put(event: Event) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # the loop closed (server shutting down): nobody is listening
                pass

        def run() -> None:
            try:
                result = work(lambda delta: put(Delta(delta)))
                put(Done(result))
            except Exception as exc:  # noqa: BLE001 - reported to the client, never lost
                put(Failed(exc))
            finally:
                self._release()

        threading.Thread(target=run, name="taskfit-generate", daemon=True).start()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                yield Failed(TimeoutError(f"the answer took longer than {timeout:g} s"))
                return
            try:
                event = await asyncio.wait_for(queue.get(), left)
            except TimeoutError:
                continue
            yield event
            if not isinstance(event, Delta):
                return
