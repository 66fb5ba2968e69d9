"""Listens to the engine's pub/sub channel: wakes the queue's dispatcher loop and arms promotion timers.

This is how a job added through any server reaches idle workers connected to any other at once, and how a
ControlWorker call reaches the server holding the worker's stream (``k <JSON>``: services/worker_control.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio.client import PubSub

from queue_manager_server.components.pause_timer import PauseTimer
from queue_manager_server.components.promoter import Promoter
from queue_manager_server.components.scheduler import Scheduler
from queue_manager_server.engine.clients import Client
from queue_manager_server.errors import QueueDeleted
from queue_manager_server.services.dispatcher import Dispatcher
from queue_manager_server.services.job_events import EventWatchers
from queue_manager_server.services.pull import PullWaiters
from queue_manager_server.services.waiters import JobWaiters
from queue_manager_server.services.worker_control import WorkerControl

log = logging.getLogger("queue_manager_server.notifier")
# Longest single wait for a message. redis-py 5 (which the server still allows) applies the socket timeout
# to `listen()`, dropping an idle subscription every QM_REDIS_TIMEOUT_MS; a wait given its own timeout just
# ends empty.
POLL_S = 1.0


class Notifier:
    name = "notifier"

    def __init__(
        self,
        redis: Client,
        channel: str,
        dispatcher: Dispatcher,
        promoter: Promoter,
        scheduler: Scheduler | None = None,
        waiters: JobWaiters | None = None,
        events: EventWatchers | None = None,
        control: WorkerControl | None = None,
        pulls: PullWaiters | None = None,
        pause_timer: PauseTimer | None = None,
    ) -> None:
        self.redis = redis
        self.channel = channel
        self.dispatcher = dispatcher
        self.promoter = promoter
        self.scheduler = scheduler
        self.waiters = waiters
        self.events = events
        self.control = control
        self.pulls = pulls
        self.pause_timer = pause_timer
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _dispatch(self, parts: list[bytes]) -> None:
        """``w <queue>``: jobs are waiting; ``d <queue> <run-at ms>``: a job was delayed until then;
        ``c <queue> <id> <token> <reason>``: the run holding that lease must stop (a cancel); ``t`` alike
        for a run the server timed out (time_out.lua);
        ``s <queue> <due ms>``: a schedule was created or changed and falls due then; ``j <queue> <id>
        <state>``: a job some WaitForJob of this process may follow changed state; ``x <queue>``: a watched
        queue was deleted (its WatchJobEvents calls end); ``p <queue> <resume ms>``: a timed pause of the
        queue or one of its groups lifts then."""
        if len(parts) < 2:
            return
        queue = parts[1].decode()
        if parts[0] == b"x":  # ``x <queue>``: the queue was obliterated while watched (obliterate.lua)
            if self.events is not None:
                self.events.fail(queue, QueueDeleted(queue))
            return
        if parts[0] == b"j":  # ``j <queue> <id> <state>``: a followed job changed state (WaitForJob)
            if self.waiters is not None and len(parts) == 4:
                self.waiters.notify(queue, parts[2].decode(), parts[3].decode())
            return
        if parts[0] in (b"c", b"t"):  # ``c|t <queue> <id> <token> <reason…>``: that run must stop
            if len(parts) >= 4:
                reason = b" ".join(parts[4:]).decode(errors="replace")
                timed_out = parts[0] == b"t"
                self.dispatcher.stop_run(queue, parts[2].decode(), parts[3].decode(), reason, timed_out)
            return
        if parts[0] == b"s":  # ``s <queue> <due ms>``: a schedule was set; no job to hand out yet
            if self.scheduler is not None and len(parts) == 3:
                self.scheduler.schedule(queue, int(parts[2]))
            return
        if parts[0] == b"p":  # ``p <queue> <resume ms>``: a timed pause was given; nothing to hand out yet
            if self.pause_timer is not None and len(parts) == 3:
                self.pause_timer.schedule(queue, int(parts[2]))
            return
        if self.pulls is not None:  # waiting fetches (FetchJobs) claim again after any event of the queue
            self.pulls.wake(queue)
        if parts[0] == b"w":
            self.dispatcher.event(queue)  # may be spare: this server's add claimed its jobs already
            return
        self.dispatcher.wake(queue)
        if parts[0] == b"d" and len(parts) == 3:
            self.promoter.schedule(queue, int(parts[2]))

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as ps:
                    await ps.subscribe(self.channel)
                    self.ready.set()
                    backoff = 0.1
                    # redis-py may also reconnect the subscription by itself (its retry of a read that
                    # failed), subscribing again in its own connect callback: this one, registered after
                    # it, catches up after that too.
                    if ps.connection is not None:
                        ps.connection.register_connect_callback(self._resubscribed)
                    self._catch_up()
                    await self._listen(ps)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.ready.clear()
                log.warning("subscription lost; reconnecting", extra={"error": str(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _catch_up(self) -> None:
        """After a (re)subscribe, anything published meanwhile was missed: wakes every loop and waiter."""
        self.dispatcher.forget_events()
        for queue in list(self.dispatcher.sessions):
            self.dispatcher.wake(queue)
        if self.waiters is not None:
            self.waiters.notify_all()
        if self.pulls is not None:
            self.pulls.wake_all()

    async def _resubscribed(self, connection: object) -> None:
        log.info("subscription reconnected; waking every queue")
        self._catch_up()

    async def _listen(self, ps: PubSub) -> None:
        while True:
            message = await ps.get_message(ignore_subscribe_messages=True, timeout=POLL_S)
            if message is not None and message.get("type") == "message":
                data = message["data"]
                if data.startswith(b"e "):  # ``e <queue> <ms> <JSON>``: job events (WatchJobEvents)
                    if self.events is not None:
                        self.events.deliver(data)
                elif data.startswith(b"k "):  # ``k <JSON>``: a worker control request or answer
                    if self.control is not None:
                        self.control.deliver(data[2:])
                else:
                    self._dispatch(data.split(b" "))
