"""TestClockService: moves the clock of a server made for tests (docs/testing.md), over gRPC, so test suites
in any language can use it (`qm test-server` starts such a server).

Only a server with Settings.test_clock moves its clock; any other answers FAILED_PRECONDITION and reads or
writes nothing, so the service can be served everywhere (reflection lists it, and a call to a production
server is told why it is refused). The moves themselves are the App's
(`App.advance_clock`): one at a time, each followed by the server's catch-up on what fell due.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

from queue_manager.v1 import test_clock_service_pb2 as pb
from queue_manager.v1 import test_clock_service_pb2_grpc as pb_grpc
from queue_manager_server import errors, validate
from queue_manager_server.convert import ms_duration, ms_timestamp
from queue_manager_server.engine.clock import TestClockStorage
from queue_manager_server.engine.engine import Engine
from queue_manager_server.services.errors import unary

REAL_TIME = (
    "this server runs on real time: only a server started for tests (`qm test-server`, or "
    "queue_manager_server.testing.TestServer) has a clock that can be moved (docs/testing.md)"
)


class TestClockService(pb_grpc.TestClockServiceServicer):
    """AdvanceClock and GetClock, on the engine's test clock (none: every call is refused)."""

    __test__ = False  # not a pytest test class

    def __init__(self, engine: Engine, advance: Callable[[int], Awaitable[None]]) -> None:
        """Args:
        engine: The server's engine; its test_clock says whether the calls are served.
        advance: Moves the clock that many ms forward (0: none) and has the server catch up
            (App.advance_clock).
        """
        self._engine = engine
        self._advance = advance
        self._storage = TestClockStorage(engine) if engine.test_clock else None

    def _clock(self) -> TestClockStorage:
        if self._storage is None:
            raise errors.WrongState(REAL_TIME)
        return self._storage

    @unary
    async def AdvanceClock(
        self, request: pb.AdvanceClockRequest, context: grpc.aio.ServicerContext
    ) -> pb.AdvanceClockResponse:
        storage = self._clock()
        await self._advance(validate.duration_ms(request.amount, "amount"))
        now, offset = await self._read(storage)
        return pb.AdvanceClockResponse(now=ms_timestamp(now), offset=ms_duration(offset))

    @unary
    async def GetClock(
        self, request: pb.GetClockRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetClockResponse:
        now, offset = await self._read(self._clock())
        return pb.GetClockResponse(now=ms_timestamp(now), offset=ms_duration(offset))

    async def _read(self, storage: TestClockStorage) -> tuple[int, int]:
        """The clock's time (ms since the epoch, as the scripts read it) and its offset (ms)."""
        return await self._engine.redis_time_ms(), await storage.offset_ms()
