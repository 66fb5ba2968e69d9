"""The test clock of a server made for tests (`qm test-server`, docs/testing.md), seen from a client: the
requests and answers of TestClockService, shared by `QueueManager` and `SyncQueueManager`."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from queue_manager.client_base import ClientBase
from queue_manager.v1 import test_clock_service_pb2 as pb
from queue_manager.v1 import test_clock_service_pb2_grpc as pb_grpc

__all__ = ["TestClockCalls", "advance_request", "clock_time"]

# The server's bound on one move (validate.duration_ms): ten years.
MAX_ADVANCE_S = 10 * 365 * 86_400


def advance_request(amount: float | timedelta) -> pb.AdvanceClockRequest:
    """The request moving the clock `amount` forward: seconds (int or float) or a timedelta, 0 or more.

    Raises:
        TypeError: neither a number nor a timedelta.
        ValueError: negative, infinite, NaN, or over ten years (the clock never goes back).
    """
    if isinstance(amount, timedelta):
        seconds = amount.total_seconds()
    elif isinstance(amount, int | float) and not isinstance(amount, bool):
        seconds = float(amount)
    else:
        raise TypeError(f"amount: seconds (int or float) or a timedelta, not {type(amount).__name__}")
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_ADVANCE_S:
        raise ValueError(f"amount: the test clock moves forward by 0 to ten years, not {amount!r}")
    request = pb.AdvanceClockRequest()
    request.amount.FromMilliseconds(round(seconds * 1000))
    return request


def clock_time(response: pb.AdvanceClockResponse | pb.GetClockResponse) -> datetime:
    """The clock's time an answer carries (UTC)."""
    return datetime.fromtimestamp(response.now.ToMilliseconds() / 1000, UTC)


class TestClockCalls(ClientBase):
    """Moving and reading the clock of a server made for tests (QueueManager's). On any other server each
    raises `FailedPreconditionError`, and nothing changes."""

    __test__ = False  # not a pytest test class

    async def advance_test_clock(self, amount: float | timedelta) -> datetime:
        """Moves the server's test clock `amount` forward (seconds or a timedelta, 0 or more) and returns
        its time after the move, once the server has done what fell due by then: delayed jobs and retries
        due are waiting (or already delivered), due schedules have fired, runs past their timeout have
        failed, expired jobs have ended (docs/testing.md)."""
        response: pb.AdvanceClockResponse = await self._unary(
            self._clock_stub().AdvanceClock, advance_request(amount)
        )
        return clock_time(response)

    async def test_clock_now(self) -> datetime:
        """The server's test clock: real time plus every advance so far (UTC)."""
        response: pb.GetClockResponse = await self._unary(self._clock_stub().GetClock, pb.GetClockRequest())
        return clock_time(response)

    def _clock_stub(self) -> pb_grpc.TestClockServiceStub:
        return pb_grpc.TestClockServiceStub(self._ensure_channel())
