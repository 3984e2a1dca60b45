"""Idle exit: the agent stops itself after a stretch with nothing to do (`--idle-exit-s`).

The host's long-lived local agent uses it so that an agent started by one CLI call and reused
by the next ones does not outlive its user's session forever. "Nothing to do" means: no call
in flight (a streaming Benchmark counts until its stream ends), no benchmark queued or
running, and no call started, for the whole period.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable

import grpc

CHECK_EVERY_S = 1.0


class ActivityInterceptor(grpc.aio.ServerInterceptor):
    """Counts calls in flight and remembers when the agent was last busy."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.last_active = time.monotonic()

    def _enter(self) -> None:
        self.in_flight += 1
        self.last_active = time.monotonic()

    def _leave(self) -> None:
        self.in_flight -= 1
        self.last_active = time.monotonic()

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behavior = getattr(handler, kind)
            if behavior is not None:
                return handler._replace(**{kind: self._counted(behavior)})
        return handler

    def _counted(self, behavior: Callable):
        if inspect.isasyncgenfunction(behavior):
            async def stream(request, context):
                self._enter()
                try:
                    async for item in behavior(request, context):
                        yield item
                finally:
                    self._leave()

            return stream

        async def call(request, context):
            self._enter()
            try:
                return await behavior(request, context)
            finally:
                self._leave()

        return call


async def stop_when_idle(
    idle_s: float, activity: ActivityInterceptor, busy: Callable[[], bool], stop: asyncio.Event
) -> None:
    """Sets `stop` once nothing happened for `idle_s` seconds (`busy()` also keeps it alive:
    a benchmark whose client went away still runs to its end)."""
    while not stop.is_set():
        await asyncio.sleep(min(CHECK_EVERY_S, idle_s))
        now = time.monotonic()
        if activity.in_flight or busy():
            activity.last_active = now
        elif now - activity.last_active >= idle_s:
            print(f"edgeloop-agent idle for {idle_s:g} s: exiting", flush=True)
            stop.set()
