"""The dispatcher: claims jobs for the workers connected to this server and pushes them down their streams.

One loop per served queue, woken by events (a job added anywhere, a credit returned, a delay falling due)
instead of polling; each claim is one Lua call that leases a batch.

A job added through this server to a queue it serves is claimed with its add: the coalescer
(services/adds.py) tells `Dispatcher.adding` before it sends the write. When a worker of the queue has free
slots and no claim of the queue is under way, the claim is folded into the add's own script call
(`Dispatcher.claim_of`; add_jobs.lua runs it once the jobs are in), and its reply comes back with the add's:
one round trip and one script call where a claim of its own cost both again (`Dispatcher.added` hands the
jobs over). Otherwise the queue's loop claims right behind the add, so the claim leaves as the add's reply
is awaited and Redis runs it just after the add, a round trip earlier than the add's pub/sub event would
have started it. That event may still come (when a claim had left the queue with no ready job, the
add publishes it for whichever server waits: common.lua publish_ready); when the claim that followed the
add leased every job of it, the event — or one published before it, whose jobs that claim saw too — wakes
nothing (`Dispatcher.event`): no second, empty claim per add. An add whose folded claim left no ready job
publishes no event at all: no server, this one or another, would find a job to claim.

Jobs routed by worker labels (JobOptions.worker_labels) go only to sessions whose hello labels match them;
a claim for another session passes them over (includes/claim.lua route_ok) and says so (`unmatched`). Such a
claim leaves the queue drained for that session alone (`_unmatched`): the loop goes on to the next sessions,
its credits do not send it back to Redis, and the next event (an add anywhere, a session coming) lets it
claim again. So a routed job no connected worker matches costs a claim per session per event, not a loop,
and one a session matches reaches it at once, even when the add's folded claim ran for another session.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from queue_manager.v1 import worker_service_pb2 as pb
from queue_manager_server import convert
from queue_manager_server.engine import Engine
from queue_manager_server.engine.records import ClaimedJob, ClaimRequest, ClaimResult
from queue_manager_server.services.errors import status_for
from queue_manager_server.services.exemplars import Exemplars

log = logging.getLogger("queue_manager_server.dispatcher")

# Most jobs one claim call leases (one Lua call, one delivery message).
CLAIM_BATCH = 500
# A served queue re-checks Redis at least this often even without notifications (missed pub/sub).
IDLE_RECHECK_S = 5.0
# A rate-limited queue is claimed again when its tokens are due, but at most every 25 ms (or twice per fill of
# its bucket, if sooner): the bucket keeps the rate exact, and each claim takes the tokens of 25 ms (25 jobs
# at 1,000/s) instead of one. Per job, a claim, a delivery and a report cost the drain of the queues beside
# it: one token per claim cost it two thirds of its speed; claims every 10 ms, 0.72 of it; every 25 ms,
# 0.78 (bench features, interleaved).
RATE_LIMIT_WAIT_S = 0.025
# The least a claim of a rate-limited queue asks for (see Dispatcher._take_cap).
RATE_LIMIT_MIN_TAKE = 16
# A worker with more than half its concurrency in running jobs is claimed for once half is free, or
# CREDIT_LINGER_S after its first free slot came back, whichever is first. Claiming each trickle of credits at
# once (a report of a few runs) made claims and deliveries of a few jobs each: beside a rate-limited queue, a
# busy queue took 5× the claims of a plain drain (40 jobs per claim instead of 200).
CREDIT_SHARE = 2
CREDIT_LINGER_S = 0.01
# Adds awaiting their verdict per queue (see Dispatcher.adding): a bound, for adds whose claim never came.
MAX_EXPECTED = 64
# Most jobs a claim folded into an add leases (Dispatcher._fold): the add's answer waits for its claim, so a
# backlog is left to the queue's own claims, which the folded claim wakes when it took this many.
FOLD_MAX = 32


@dataclass(eq=False, slots=True)
class Fold:
    """A claim for one session folded into an add's script call (Dispatcher.adding): its credits are held
    until the add's reply."""

    session: WorkerSession
    request: ClaimRequest
    # When the add carrying it was sent (monotonic seconds): its leases are counted from about then.
    started: float = field(default_factory=time.monotonic)


@dataclass(eq=False, slots=True)
class Expected:
    """An add being written to a queue this server serves, until it is known whether its event is spare."""

    queue: str
    ids: frozenset[str]
    # `w` events of the queue received when the add was sent: its own event is a later one.
    seen: int
    covered: bool = False  # one claim leased every job of it
    published: bool | None = None  # its script published the queue's `w` event (None: reply not in yet)
    # Numbers of the events that arrived during the claim that covered it, when that claim came back before
    # the add's reply (Redis may answer them in either order): their wake-ups wait for the reply.
    held: list[int] = field(default_factory=list)
    # The claim folded into the add's script call, until its reply.
    fold: Fold | None = None


@dataclass(eq=False)
class WorkerSession:
    """One connected worker stream."""

    worker_id: str
    queues: list[str]
    concurrency: int
    outbound: asyncio.Queue[pb.ConnectResponse | None] = field(default_factory=asyncio.Queue)
    credits: int = 0
    # (queue, job id) -> lease token, for every job this worker holds. Jobs claimed together share a token
    # (one per claim keeps the claim cheap); the job, not the token, is the key.
    leases: dict[tuple[str, str], str] = field(default_factory=dict)
    closed: bool = False
    # The worker takes no more jobs on this stream (its own stop, the server's DRAIN, an operator's STOP):
    # credits it sends are dropped.
    draining: bool = False
    # An operator quieted it (services/worker_control.py): no delivery, but its credits are kept.
    quiet: bool = False
    # Deliver nothing to it: draining or quiet. The one flag the dispatcher reads (stop_taking, set_quiet).
    held: bool = False
    # The commands beyond DRAIN and CANCEL_JOB it obeys (its hello's ``commands``).
    commands: frozenset[int] = frozenset()
    # How its slots are shared among its queues (WorkerHello.queue_weights / strict_order; validate.py
    # queue_shares): its queues in strict order, or every queue's weight; None for each without.
    order: tuple[str, ...] | None = None
    weights: dict[str, int] | None = None
    # Its tier among the queue's workers (WorkerHello.tier): a queue's claims serve it only while no session
    # of a lower tier has a free slot for the queue (Dispatcher._in_turn, _dispatch_once, _fold).
    tier: int = 0
    # Set when this server, shutting down, ends the stream of a worker still running jobs: their leases stay
    # held (not released as stalls), and the worker extends them on the stream it opens next, to this server
    # restarted or to another, which takes them over (reports.py); a worker that never comes back loses
    # them when they expire, to the reaper.
    keep_leases: bool = False
    # For the worker registry (services/registry.py): the stream's id, the hello, when the stream opened
    # and the worker last reported (monotonic seconds), and the resource use it last reported.
    session_id: str = field(default_factory=lambda: secrets.token_hex(8))
    hello: pb.WorkerHello = field(default_factory=pb.WorkerHello)
    connected_at: float = field(default_factory=time.monotonic)
    reported_at: float = field(default_factory=time.monotonic)
    # When the first delivery since the worker's last report went out (monotonic seconds; 0: none since).
    unanswered_since: float = 0.0
    stats: pb.WorkerStats | None = None
    # Slow readers (components/stream_guard.py): the task serving the stream, when the message being
    # written started waiting for the worker to take it (0: none waits), and the most messages that may
    # wait to be sent; past that the stream is cut and its jobs recovered.
    task: asyncio.Task[object] | None = None
    writing_since: float = 0.0
    max_buffer: int = 1_000
    # Loop time until which a claim for few credits waits for more (Dispatcher._dispatch_once); 0: none.
    linger_until: float = 0.0
    # Queues whose loop found no credit here while a claim of another queue held it reserved: woken when
    # that claim gives back what it did not use (Dispatcher._give_back).
    short_of_credit: set[str] = field(default_factory=set)
    # Queues whose loop passed this session over as unresponsive (Dispatcher._silent): woken when it reports.
    silenced: set[str] = field(default_factory=set)
    # Its hello's labels as name, value pairs, which its claims pass for the jobs routed by worker labels
    # (JobOptions.worker_labels).
    labels: tuple[str, ...] = ()

    def send(self, message: pb.ConnectResponse) -> None:
        if not self.closed:
            if self.outbound.qsize() >= self.max_buffer:
                self.cut(f"more than {self.max_buffer} messages wait for it (--max-worker-buffer)")
                return
            self.outbound.put_nowait(message)

    def stop_taking(self) -> None:
        """The worker takes no more jobs on this stream: nothing is delivered, and credits are dropped."""
        self.draining = self.held = True

    def set_quiet(self, quiet: bool) -> None:
        """Quiets the worker (no delivery; its credits are kept) or resumes it."""
        self.quiet = quiet
        self.held = quiet or self.draining

    @property
    def state(self) -> str:
        """Whether it takes jobs, as the worker registry shows it: active, quiet or stopping."""
        return "stopping" if self.draining else "quiet" if self.quiet else "active"

    def resize(self, concurrency: int) -> int:
        """Sets a new concurrency. A lower one takes back credits the server holds, at most the decrease
        (those a claim under way has reserved are not counted); returns how many, which the worker is told
        (SET_CONCURRENCY) so that it takes back the rest itself."""
        decrease = self.concurrency - concurrency
        self.concurrency = concurrency
        revoked = max(0, min(decrease, self.credits))
        self.credits -= revoked
        return revoked

    def cut(self, reason: str) -> None:
        """Ends a stream whose worker stopped reading: its handler ends as on a lost connection, so the
        jobs it holds go back to waiting."""
        if self.closed:
            return
        self.closed = True
        log.warning("worker stream cut", extra={"worker_id": self.worker_id, "reason": reason})
        if self.task is not None:
            self.task.cancel()

    def unresponsive(self, now: float, lease_s: float) -> bool:
        """Whether the worker holds jobs and has said nothing for a whole lease since they were sent or it
        last reported (a live worker extends its leases every heartbeat): a frozen process behind a live
        connection. Its leases have run out, or are about to, so jobs sent to it now would stall again."""
        return bool(self.leases) and now - (self.unanswered_since or self.reported_at) > lease_s

    def forget(self, queue: str, job_id: str, token: str) -> None:
        """The worker is done with this lease of the job (a stale token leaves a newer lease alone)."""
        if self.leases.get((queue, job_id)) == token:
            del self.leases[(queue, job_id)]


def cancel_command(
    queue: str, job_id: str, token: str, reason: str, timed_out: bool = False
) -> pb.ConnectResponse:
    """The CANCEL_JOB command for one lease of a job; `timed_out` for a run the server timed out."""
    return pb.ConnectResponse(
        command=pb.ServerCommand(
            type=pb.SERVER_COMMAND_TYPE_CANCEL_JOB,
            job=pb.LeaseRef(queue_name=queue, job_id=job_id, lease_token=token),
            reason=reason,
            timed_out=timed_out,
        )
    )


class Dispatcher:
    """Claims jobs for connected workers, one loop per served queue, woken by events instead of polling."""

    def __init__(self, engine: Engine, lease_ms: int) -> None:
        self.engine = engine
        self.lease_ms = lease_ms
        self.lease_s = lease_ms / 1000
        self.sessions: dict[str, set[WorkerSession]] = defaultdict(set)
        self._wake: dict[str, asyncio.Event] = {}
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[object]] = set()
        # Queues whose last claim found no ready job, with no event since: returned credits alone do not
        # send them back to Redis (at low load that halves the claims; events and timers still wake them).
        self._drained: set[str] = set()
        # Rate-limited queues: the loop time before which no token is due. Credits returned meanwhile do not
        # wake the queue (each wake would be a claim the bucket refuses: with a busy queue beside it, that
        # was a refused claim per report, which cost the other queue's drain two thirds of its speed).
        self._held_until: dict[str, float] = {}
        # Rate-limited queues: the most a claim asks for, from what the bucket gave last time. A claim
        # reserves the session's credits it asks for until it returns; asking a rate-limited queue for
        # hundreds that the bucket will not give starved the queues beside it of the worker's credits.
        self._take_cap: dict[str, int] = {}
        # Queues woken (`wake`, not a returned credit) since their last claim went out.
        self._woken: set[str] = set()
        # Per queue, the sessions whose last claim found no job they may take but passed over routed jobs of
        # other workers (module docstring): skipped by the loop, and their credits wake nothing, until the
        # next event or timer.
        self._unmatched: dict[str, set[WorkerSession]] = {}
        self._turn: dict[str, int] = {}
        # Per queue, its sessions that share their slots among their queues (strict order or weights).
        self._sharing: dict[str, set[WorkerSession]] = defaultdict(set)
        # Spare-event accounting (module docstring): per queue, the `w` events received, events still to
        # drop, adds awaiting their verdict, and while a claim runs, the numbers of the events that arrived
        # meanwhile (their wake-up waits for the claim's result).
        self._events: dict[str, int] = defaultdict(int)
        self._spare: dict[str, int] = defaultdict(int)
        self._expected: dict[str, list[Expected]] = {}
        self._claiming: dict[str, list[int]] = {}
        # Per queue, an add whose jobs a claim leased before the add's own reply came: events arriving
        # meanwhile wait for that reply too (they may be its own).
        self._awaiting: dict[str, Expected] = {}
        self.stopping = False
        # How long a claim for a busy worker's few free slots waits for more (tests change it).
        self.credit_linger_s = CREDIT_LINGER_S
        # Told (queue, ms from now) when this server leases jobs with a timeout, so the timeout check
        # (components/timeouts.py) fires on time; None: left to its periodic scan.
        self.deadline_hook: Callable[[str, int], None] | None = None
        # Traced jobs leased through this server, and their runs as the histogram's exemplars.
        self.exemplars = Exemplars()

    def register(self, s: WorkerSession) -> None:
        for q in s.queues:
            self.sessions[q].add(s)
            if s.order is not None or s.weights is not None:
                self._sharing[q].add(s)
            if q not in self._loops or self._loops[q].done():
                self._wake[q] = asyncio.Event()
                self._loops[q] = asyncio.create_task(self._serve(q), name=f"dispatch:{q}")
            self.wake(q)

    def unregister(self, s: WorkerSession) -> None:
        for q in s.queues:
            self.sessions[q].discard(s)
            self._sharing[q].discard(s)
            self.wake(q)

    def wake(self, queue: str) -> None:
        """Something happened to the queue (jobs added, resumed, a worker came or went): claim again."""
        self._drained.discard(queue)
        self._unmatched.pop(queue, None)
        self._woken.add(queue)
        ev = self._wake.get(queue)
        if ev is not None:
            ev.set()

    def clock_moved(self) -> None:
        """The test clock moved forward (queue_manager_server.testing): every served queue claims again at
        once, rate-limit holds and delayed jobs' waits included (both were timed on the clock before)."""
        self._held_until.clear()
        for queue in list(self._wake):
            self.wake(queue)

    def event(self, queue: str) -> None:
        """A ``w <queue>`` event arrived on the engine's channel (components/notifier.py): claim again,
        unless the claim that followed an add of this server already leased what the event announces."""
        number = self._events[queue] = self._events[queue] + 1
        if self._spare.get(queue):
            self._spare[queue] -= 1
            return
        arrived = self._claiming.get(queue)
        if arrived is not None:  # decided when the claim's result is in (_claimed)
            arrived.append(number)
            return
        awaiting = self._awaiting.get(queue)
        if awaiting is not None:  # decided when that add's reply is in (added)
            awaiting.held.append(number)
            return
        self.wake(queue)

    def forget_events(self) -> None:
        """The subscription was renewed and events may have been missed: no event is spare any more."""
        self._spare.clear()
        self._expected.clear()
        self._awaiting.clear()  # what they hold still wakes the loop when their replies come

    def adding(self, queue: str, ids: list[str]) -> Expected | None:
        """Jobs are about to be written to the queue through this server: claims for its workers with the
        add (a claim folded into its script call: `claim_of`) or right behind it. Returns what `added` must
        be told, or None."""
        if self.stopping or not self.sessions.get(queue):
            return None
        expected = Expected(queue, frozenset(ids), self._events[queue])
        pending = self._expected.setdefault(queue, [])
        pending.append(expected)
        if len(pending) > MAX_EXPECTED:
            del pending[0]
        expected.fold = self._fold(queue)
        if expected.fold is None:
            self.wake(queue)
        return expected

    @staticmethod
    def claim_of(token: object) -> ClaimRequest | None:
        """The claim to fold into the add that `adding` returned token for, or None."""
        return token.fold.request if isinstance(token, Expected) and token.fold is not None else None

    def _fold(self, queue: str) -> Fold | None:
        """Takes the credits of a claim for the first session with free slots, to run with an add, when no
        claim of the queue is under way and its loop has nothing else to weigh (a rate limit, a cap)."""
        if queue in self._claiming or queue in self._held_until or queue in self._take_cap:
            return None
        loop = self._loops.get(queue)
        if loop is None or loop.done():
            return None
        sessions = self._in_turn(queue)
        now = time.monotonic()
        for s in sessions:
            if s.closed or s.held or s.credits <= 0 or self._silent(s, queue, now):
                continue
            take = 0 if s.linger_until else min(self._take(s, len(sessions) == 1), FOLD_MAX)
            if s.order is not None or s.weights is not None:
                room = self._room(s, queue)
                if room <= 0:
                    continue
                take = min(take, room)
            if take <= 0:
                if s.tier < sessions[-1].tier:
                    return None  # a preferred worker's free slots wait for company: the loop claims later
                continue
            s.credits -= take
            self._claiming[queue] = []
            self._woken.discard(queue)
            self._drained.discard(queue)
            return Fold(s, ClaimRequest(take, secrets.token_hex(8), s.worker_id, self.lease_ms, s.labels))
        return None

    def _in_turn(self, queue: str) -> list[WorkerSession]:
        """The queue's sessions, starting with the next one each time (a loop's round, a folded claim): when a
        rate limit, a cap or a low rate leaves a few jobs per claim, every worker gets its turn instead of
        the first one taking them all. Sessions of a lower tier come first (their turns kept among them)."""
        sessions = list(self.sessions[queue])
        if len(sessions) > 1:
            turn = self._turn[queue] = (self._turn.get(queue, -1) + 1) % len(sessions)
            sessions = sessions[turn:] + sessions[:turn]
            if any(s.tier for s in sessions):
                sessions.sort(key=lambda s: s.tier)
        return sessions

    def _ready(self, queue: str) -> bool:
        """Whether the queue may have a job ready for a claim now: not found empty (nor paused, nor at its
        concurrency cap) since the last event, and not held back by its rate limit."""
        if queue in self._drained:
            return False
        held = self._held_until.get(queue)
        return held is None or asyncio.get_running_loop().time() >= held

    def _room(self, s: WorkerSession, queue: str) -> int:
        """How many of the session's free slots the queue may take under its sharing (WorkerSession.order /
        weights): strict, all of them once no queue before it may have a job ready, else none; weighted, up
        to its share of the concurrency among the queues that may have jobs ready, less what it runs now."""
        if s.order is not None:
            for q in s.order:
                if q == queue:
                    return s.credits
                if self._ready(q):
                    return 0
            return s.credits
        assert s.weights is not None
        total = sum(w for q, w in s.weights.items() if q == queue or self._ready(q))
        share = -(-s.concurrency * s.weights[queue] // total)
        running = sum(1 for q, _ in s.leases if q == queue)
        return min(s.credits, share - running)

    def _take(self, s: WorkerSession, split: bool) -> int:
        """How many jobs a claim for the session asks for now; 0 while its few free slots wait for more
        (most of its jobs still run: a report of a few runs waits a little for company, so the claim and
        the delivery carry many jobs)."""
        share = s.concurrency // CREDIT_SHARE
        if s.credits < share and len(s.leases) >= share:
            return 0
        # A lone worker would otherwise run in lockstep (all its jobs in one batch, then all outcomes
        # back): claiming half its concurrency at a time keeps one batch in flight while it runs the other.
        # With several workers their batches interleave anyway, and bigger batches cost less.
        return min(s.credits, CLAIM_BATCH, max(1, s.concurrency // 2) if split else CLAIM_BATCH)

    def added(self, token: object, published: bool, claim: ClaimResult | None = None) -> None:
        """The add's reply: whether its script published the queue's ``w`` event (False when unknown), and
        the reply of the claim folded into it (None: none, or no reply)."""
        if not isinstance(token, Expected):
            return
        token.published = published
        held, token.held = token.held, []
        if self._awaiting.get(token.queue) is token:
            del self._awaiting[token.queue]
        folded = token.fold is not None
        if folded:
            self._folded(token, claim)
        if not published:
            self._drop(token)
        elif token.covered:
            if not folded:  # a folded claim spent the add's event itself, as any claim does (_claimed)
                held = self._spend(token, held)
        elif self._events[token.queue] > token.seen + 1:
            self._drop(token)  # its first event came and went: nothing can be spared for it any more
        if held:
            self.wake(token.queue)

    def _folded(self, e: Expected, res: ClaimResult | None) -> None:
        """The claim folded into the add e came back (res None: no reply, or the add failed): its jobs go to
        the session as a claim's of the loop would; anything but a plain outcome is left to the loop."""
        assert e.fold is not None
        queue, s, request, started = e.queue, e.fold.session, e.fold.request, e.fold.started
        e.fold = None
        self._give_back(s, queue, request.take, len(res.jobs) if res is not None else 0)
        self._claimed(queue, [j.id for j in res.jobs] if res is not None else [])
        if res is not None and res.jobs:
            self._hand_over(queue, s, request.token, res.jobs, started)
        if res is None or res.code != 0 or res.retry_after_ms > 0 or res.bucket_fill_ms > 0:
            # No reply, or paused, rate limited, held, at the cap: the loop's own claims see to it.
            self.wake(queue)
        elif len(res.jobs) == request.take or res.next_delayed_ms >= 0:
            self.wake(queue)  # more may wait, or a delayed job's timer to arm
        elif res.unmatched:
            # Routed jobs wait that this session may not take: another session here may match them (the
            # add published its event for those of other servers).
            self._pass_over(queue, s)
            ev = self._wake.get(queue)
            if ev is not None:
                ev.set()
        else:
            self._mark_drained(queue)  # credits returned meanwhile find no ready job either

    def _give_back(self, s: WorkerSession, queue: str, reserved: int, leased: int) -> None:
        """A claim of the queue for the session is back: the credits it reserved return (_hand_over spends
        those of the jobs it leased). Queues of the session that found it without credits meanwhile claim
        again now if some were left unused; otherwise their loops would sleep until the next event or
        IDLE_RECHECK_S, and a worker of several queues waited seconds for a job while it had free slots."""
        s.credits += reserved
        if leased < reserved and s.short_of_credit:
            short, s.short_of_credit = s.short_of_credit, set()
            for q in short:
                if q != queue:
                    self.credit(q)

    def _hand_over(
        self, queue: str, s: WorkerSession, token: str, jobs: list[ClaimedJob], started: float
    ) -> None:
        """Jobs a claim leased to the session: down its stream, or back to waiting when the worker left or
        stopped taking jobs (or was quieted) while the claim ran. `started` (monotonic seconds, taken before
        the claim's script call) starts the worker's silence: the leases run from the script's clock, so a
        slow reply must not make a worker that said nothing for a whole lease look less silent than it is
        once the reaper has recovered the jobs (WorkerSession.unresponsive)."""
        s.credits -= len(jobs)
        if s.closed or s.held:
            self.spawn(self.engine.release(queue, [(j.id, token) for j in jobs], False), "release")
            return
        exemplars = self.exemplars
        for j in jobs:
            s.leases[(queue, j.id)] = token
            if j.metadata:
                exemplars.delivered(queue, j)
        if not s.unanswered_since:
            s.unanswered_since = started
        timeouts = [j.timeout_ms for j in jobs if j.timeout_ms]
        if timeouts and self.deadline_hook is not None:
            self.deadline_hook(queue, min(timeouts))
        s.send(convert.job_delivery(queue, jobs, token))

    def _drop(self, e: Expected) -> None:
        pending = self._expected.get(e.queue)
        if pending and e in pending:
            pending.remove(e)

    def _spend(self, e: Expected, arrived: list[int]) -> list[int]:
        """An add that published its event and whose jobs one claim leased: the first event to arrive since
        the add was sent was published no later than the add's own, so before that claim ran, which saw
        its jobs too. Unless it has woken the loop already, it is spare. Returns arrived without it."""
        self._drop(e)
        first = e.seen + 1
        for held in (arrived, self._claiming.get(e.queue)):
            if held is not None and first in held:  # held during that claim or the one running now
                held.remove(first)
                return arrived
        if self._events[e.queue] == e.seen:  # not arrived yet
            self._spare[e.queue] += 1
        return arrived

    def _claimed(self, queue: str, jobs: list[str]) -> None:
        """A claim of the queue came back (jobs: the ids it leased): wake-ups held during it are due now,
        except the event that an add's own claim has made spare."""
        arrived = self._claiming.pop(queue, [])
        pending = self._expected.get(queue)
        if jobs and pending:
            leased = set(jobs)
            for e in list(pending):
                if not e.ids <= leased:
                    continue
                e.covered = True
                if e.published is None:  # decided by the add's reply (added)
                    e.held, arrived = arrived, []
                    self._awaiting.setdefault(queue, e)
                elif e.published:
                    arrived = self._spend(e, arrived)
        if arrived:
            self.wake(queue)
        if pending:
            # An add that an event has followed since it was sent can spare nothing any more: that event
            # has woken the loop by now (or is held for another add, which alone may spend it).
            events = self._events[queue]
            pending[:] = [e for e in pending if e.seen == events]

    def credit(self, queue: str, s: WorkerSession | None = None) -> None:
        """A worker of the queue (s, when known) can take more jobs: claim again unless the queue is known to
        be empty, or to hold only routed jobs that worker may not take."""
        ev = self._wake.get(queue)
        if ev is None or queue in self._drained:
            return
        if s is not None and s in self._unmatched.get(queue, ()):
            return
        held = self._held_until.get(queue)
        if held is not None and asyncio.get_running_loop().time() < held:
            return  # its loop wakes itself when the tokens are due
        ev.set()

    def stop_run(self, queue: str, job_id: str, token: str, reason: str, timed_out: bool = False) -> bool:
        """Tells the worker holding this lease of the job, if it is connected here, to stop the run
        (CANCEL_JOB; `timed_out` when the server timed the run out, so the worker ends it as at its own
        timeout). Returns whether one was told."""
        for s in self.sessions.get(queue, ()):
            if s.leases.get((queue, job_id)) == token:
                s.send(cancel_command(queue, job_id, token, reason, timed_out))
                return True
        return False

    def lease_ended(self, queue: str, job_id: str, token: str) -> None:
        """A run ended through a unary call of its worker (WaitForChildren, WaitForEvent park the job) rather
        than a report on its stream: the session holding the lease, if it is connected here, forgets it as
        a report's outcome would make it. Otherwise the lease counted for ever against the credits the
        session may hold (a worker whose jobs all waited for events stopped getting jobs), in its in-flight
        figure, and in what a drain waits for."""
        for s in self.sessions.get(queue, ()):
            if s.leases.get((queue, job_id)) == token:
                del s.leases[(queue, job_id)]
                return

    def session_of(self, worker_id: str) -> WorkerSession | None:
        """The open stream of a worker on this server (the newest, if it has reconnected), or None."""
        found = [s for s in self.all_sessions() if s.worker_id == worker_id and not s.closed]
        return max(found, key=lambda s: s.connected_at) if found else None

    def all_sessions(self) -> set[WorkerSession]:
        return {s for group in self.sessions.values() for s in group}

    def spawn(self, coro: object, name: str) -> None:
        """Runs work that must finish even if the stream handler that started it is cancelled."""
        task: asyncio.Task[object] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _serve(self, queue: str) -> None:
        wake = self._wake[queue]
        while self.sessions[queue] and not self.stopping:
            wake.clear()
            timeout = IDLE_RECHECK_S
            try:
                timeout = await self._dispatch_once(queue)
            except Exception as exc:
                code, message = status_for(exc)
                log.warning("dispatch failed", extra={"queue": queue, "status": code.name, "error": message})
                timeout = 1.0
            if timeout == 0:
                continue
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps the wait in a task of its own,
            # which costs a wake-up two more event-loop turns.
            try:
                async with asyncio.timeout(timeout):
                    await wake.wait()
            except TimeoutError:
                # A timer (a delayed job due, the idle re-check): every session claims again, as after an
                # event (a job it may take may have become ready without one).
                self._unmatched.pop(queue, None)
        self._loops.pop(queue, None)

    async def _dispatch_once(self, queue: str) -> float:
        """Claims for every session with credit. Returns how long to wait (0 = go again at once)."""
        if queue in self._claiming:
            # A claim folded into an add is under way (the loop's own are not, between its rounds): its
            # outcome wakes the loop, or leaves the queue drained.
            return IDLE_RECHECK_S
        self._held_until.pop(queue, None)
        more = False
        wait = IDLE_RECHECK_S
        sessions = self._in_turn(queue)
        split = len(sessions) == 1
        now = asyncio.get_running_loop().time()
        clock = time.monotonic()
        # The lowest tier of a session left with free slots for the queue this round: sessions of a higher
        # tier wait while it has them (WorkerSession.tier).
        free_tier = sessions[-1].tier
        unmatched = self._unmatched.get(queue, ())
        for s in sessions:
            if s.closed or s.held or s in unmatched or self._silent(s, queue, clock):
                continue
            if s.tier > free_tier:
                break
            if s.credits <= 0:
                s.short_of_credit.add(queue)
                continue
            room = s.credits if s.order is None and s.weights is None else self._room(s, queue)
            if room <= 0:  # its slots are the other queues' now: woken when they drain or runs end
                continue
            take = self._take(s, split)
            if not take:
                # Credits trickling back (a report of a few runs, a rate-limited queue's few jobs) wait a
                # little for company, at most credit_linger_s.
                if not s.linger_until:
                    s.linger_until = now + self.credit_linger_s
                if now < s.linger_until:
                    wait = min(wait, s.linger_until - now)
                    free_tier = s.tier
                    continue
                take = min(s.credits, CLAIM_BATCH)
            s.linger_until = 0.0
            take = min(take, self._take_cap.get(queue, take), room)
            s.credits -= take
            token = secrets.token_hex(8)
            self._claiming[queue] = []
            self._woken.discard(queue)
            leased: list[str] = []
            started = time.monotonic()
            try:
                res = await self.engine.claim(queue, take, token, s.worker_id, self.lease_ms, s.labels)
                leased = [j.id for j in res.jobs]
            finally:
                self._give_back(s, queue, take, len(leased))
                self._claimed(queue, leased)
            if res.code == 1:  # paused: resume publishes a notification
                self._mark_drained(queue)
                return IDLE_RECHECK_S
            if res.code == 2 or res.retry_after_ms > 0:  # the bucket gave what it had: ask for about that
                self._take_cap[queue] = max(RATE_LIMIT_MIN_TAKE, 2 * len(res.jobs))
            elif len(res.jobs) == take:
                self._take_cap.pop(queue, None)
            # A rate-limited queue comes back for a claim's worth of tokens, but before its bucket is half
            # full (tokens beyond the burst are not kept: waiting a whole fill loses rate to any delay).
            pace = RATE_LIMIT_WAIT_S
            if res.bucket_fill_ms > 0:
                pace = min(pace, res.bucket_fill_ms / 2000)
            if res.code == 2:  # rate limited, or held by a retry-after: come back when it says
                return self._hold(queue, max(res.retry_after_ms / 1000, pace))
            if res.code == 3:  # at the concurrency cap: a run ending anywhere publishes a wake-up
                self._mark_drained(queue)
                return IDLE_RECHECK_S
            if res.jobs:
                self._hand_over(queue, s, token, res.jobs, started)
                if self._sharing.get(queue):
                    # Jobs were ready after all (delayed ones fell due): the queues after it wait again.
                    self._drained.discard(queue)
                if s.closed or s.held:
                    continue
                if len(res.jobs) == take:
                    more = True
                    if s.credits > 0:
                        free_tier = s.tier
            empty = res.code == 0 and len(res.jobs) < take and res.retry_after_ms == 0
            if empty and res.unmatched:
                # Only routed jobs it may not take are left: drained for this session alone, and the next
                # sessions claim in turn (one may match them).
                self._pass_over(queue, s)
                unmatched = self._unmatched[queue]
                empty = False
            if empty:
                self._mark_drained(queue)
            if res.next_delayed_ms >= 0:
                wait = min(wait, max((res.next_delayed_ms - res.now_ms) / 1000, 0.0) + 0.001)
            if res.retry_after_ms > 0:  # the rate limit held jobs back: come back for the next tokens
                return self._hold(queue, min(wait, max(res.retry_after_ms / 1000, pace)))
            if empty:
                # No ready job is left: the other sessions' claims would come back empty (at low load
                # that was one wasted claim per job and worker). Jobs added meanwhile wake a new round.
                break
        return 0 if more else wait

    def _pass_over(self, queue: str, s: WorkerSession) -> None:
        """The session's claim found only routed jobs it may not take: it claims the queue again after the
        next event or timer (`wake`, `_serve`)."""
        self._unmatched.setdefault(queue, set()).add(s)

    def _silent(self, s: WorkerSession, queue: str, now: float) -> bool:
        """Whether the session is unresponsive (WorkerSession.unresponsive): it gets no job until it reports
        again, and then its queues are woken (`heard`). Jobs recovered from a frozen worker went straight
        back to it while it had credits, and stalled a second time."""
        if not s.unresponsive(now, self.lease_s):
            return False
        s.silenced.add(queue)
        return True

    def heard(self, s: WorkerSession) -> None:
        """The session reported: if it was passed over as unresponsive, its queues claim for it again."""
        s.unanswered_since = 0.0
        if s.silenced:
            silenced, s.silenced = s.silenced, set()
            for q in silenced:
                self.wake(q)

    def _hold(self, queue: str, wait: float) -> float:
        """The rate limit holds the queue for `wait` seconds: credits do not wake it meanwhile."""
        self._held_until[queue] = asyncio.get_running_loop().time() + wait
        self._share_out(queue)
        return wait

    def _mark_drained(self, queue: str) -> None:
        # An event that arrived while the claim ran (`wake`): then the queue may have jobs.
        if queue in self._woken:
            return
        self._drained.add(queue)
        ev = self._wake.get(queue)
        if ev is not None:
            ev.clear()  # set by credits returned meanwhile: no ready job for them, no claim
        self._share_out(queue)

    def _share_out(self, queue: str) -> None:
        """The queue has no job ready for a while (drained, or held by its rate limit): the other queues of
        its workers that share their slots (strict order, weights) may take its share now."""
        for s in self._sharing.get(queue, ()):
            for q in s.queues:
                if q != queue:
                    self.credit(q)

    async def stop(self) -> None:
        self.stopping = True
        for ev in self._wake.values():
            ev.set()
        loops = list(self._loops.values())
        for t in loops:
            t.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
