"""Plain records the engine returns, and the job-hash field names they are read from.

Job hash fields: name, data, ct (content type; absent for JSON, the common case), pri (absent: 3; also names
the waiting list the job is in, but for one a priority bound moved to the first: age_waiting.lua), seq (no
longer written: older servers kept a FIFO place there), att (max attempts; absent: 1), atm (attempts made =
finished runs: the failed ones, plus the one that completed; absent: 0, or 1 on a completed job), ats
(attempts started: written by older servers only; every start ends as a finished run or a stall, so a claim
counts atm + stc + 1), stc (stalled count), bt/bd/bj/bm (backoff type/delay/jitter/max), kc/kf (keep
policies), to (timeout ms), ms (max stalled), md (encoded metadata), ts (created), run (run-at), rdy (when a
promotion or a retry last made it ready: its wait counts from the latest of ts, run and rdy; metrics.lua,
age_waiting.lua), st (state; absent: waiting, as a job added waiting has none), tok (lease token), wid (worker
id and the run's start in ms, "<worker id> <ms>"; both left after the run, tok and the worker id mean
something only while st is active), pts (the run's start as older servers wrote it, beside a wid holding the
worker id only), fts (finished), lex (lease expiry: written by older servers only, the active zset's score
holds it), res/rct (result and its content type; no rct: JSON; a completed job without res returned none, JSON
null), err/stk (last failure), prog (progress JSON), rm (delete after the dead-letter hand-off), dlo (on a
dead-letter copy: the queue it came from; a copy is never copied again). Flows (engine/flows.py): flo (in a
flow: hand off on finish; "e" on a chain's last link: only when it does not complete), par (encoded Job
holding parents, chain_root and workflow), chn (encoded JobOptions holding the chain links still to come), chd
(encoded Job holding the children started), cfl (on a chain's first job: why the chain stopped). Control
(engine/control.py): cxr ("1" once a cancel was asked while the job was active), cxm (the cancel reason). Job
control (engine/job_control.py): lgn (log lines ever added; the lines are in the queue's ``logs:<id>`` list),
wt ("1": a WaitForJob follows it, so its state changes are published), ddk (its dedup key, held until it
finishes unless ddt), ddt (the dedup key's ttl ms, when it has one), ddm (its add's Dedup.mode number, when
one was given), ddl (with mode REPLACE and a delay: the delay ms a duplicate's replace re-delays it by).
Expiry: exa (expire after ms), exp (when it expires, Redis ms: exa after it was first ready; a claim that
finds it past ends it cancelled). Order: grp (its fairness group: lua/includes/common.lua level_key), lf ("1":
LIFO, to the head of its level). Children added at run time (lua/includes/children.lua): k:<child id> (per
child, '<seq> <queue>', then its outcome after a space once it finished), kd:<derived id> ('<seq> <id>': the
job a dedup child's key resolved to), kseq, kpn, kgn, kgg, kgc, kgs, kpb; on a child that existed before its
parent named it, kup (encoded Jobs, each holding one parent waiting for it: lua/children_attach.lua).
The scripts' own: p (which of the fields a claim and a completion read the
job has none of, so they read fewer: "1" none of them, "c" none a completion reads, "0" or absent: read them
all; lua/includes/common.lua PLAIN), left out of every JobRecord (engine.py job_fields) and of the scripts'
answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STATES = ("waiting", "active", "delayed", "completed", "failed", "paused", "cancelled")


def netstrings(fields: dict[str, bytes]) -> bytes:
    """Field/value pairs as netstrings (``<length>:<bytes>``), binary-safe, for the Lua scripts."""
    parts: list[bytes] = []
    for name, value in fields.items():
        key = name.encode()
        parts += [b"%d:%s" % (len(key), key), b"%d:%s" % (len(value), value)]
    return b"".join(parts)


# What a job hash without 'ct', 'pri' or 'att' holds: includes/add.lua stores only what differs from these
# (common.lua DEFAULT_PRI and DEFAULT_ATT; tests/test_engine.py compares them).
JSON_TYPE = "application/json"
STORED_PRIORITY = 3
STORED_ATTEMPTS = 1


def is_json_type(content_type: str) -> bool:
    """True for ``application/json``, with or without parameters (``; charset=utf-8``)."""
    # The exact form first: what clients send (0.05 µs, where taking the type apart costs 0.3 per add).
    if content_type == JSON_TYPE:
        return True
    return content_type.split(";", 1)[0].strip().lower() == JSON_TYPE


# NewJob fields whose defaults let argv() send a short header; the backoff's other fields and the dedup ttl
# mean nothing without a backoff type and a dedup key.
_DEFAULT_HEADER = (JSON_TYPE, 0, -1, -1, 0, 0, 0, 0, "", "", "", 0, "", False)


@dataclass(slots=True)
class NewJob:
    """A job to add, with per-job options already validated (0 / -1 / "" mean "queue default" / none)."""

    id: str
    name: str
    data: bytes
    content_type: str = JSON_TYPE
    priority: int = 0
    delay_ms: int = -1
    run_at_ms: int = -1
    attempts: int = 0
    backoff_type: int = 0
    backoff_delay_ms: int = 0
    backoff_jitter: float = 0.0
    backoff_max_ms: int = 0
    keep_completed: str = ""
    keep_failed: str = ""
    timeout_ms: int = 0
    max_stalled: int = 0
    # Deduplication: while the key is held, adding a job with it returns the holder (ttl 0: until it ends).
    dedup_key: str = ""
    dedup_ttl_ms: int = 0
    # What an add with a held key does (Dedup.mode's number): 0/1 keep the first, 2 extend, 3 replace.
    dedup_mode: int = 0
    # Expiry: not started within this many ms of being ready, the job is not run (0: the queue's default).
    expire_after_ms: int = 0
    # Fairness group (JobOptions.group): "" for none.
    group: str = ""
    # LIFO (JobOptions.lifo): to the head of its level.
    lifo: bool = False
    metadata: bytes = b""
    # More job-hash fields (flows: parents, chain, workflow step), as field/value pairs.
    extra: dict[str, bytes] = field(default_factory=dict)

    def argv(self) -> tuple[str, bytes, bytes, bytes]:
        """The four add_jobs.lua arguments: NUL-terminated header fields, data, metadata, extra fields.

        The 16th header field is unused (0): older servers wrote a FIFO seq there (includes/add.lua). A job
        whose content type and options are all the defaults sends its id and name only (includes/add.lua
        reads missing fields as their defaults): splitting the 18 fields cost Valkey ~1.3 µs per job.
        """
        if (
            self.content_type,
            self.priority,
            self.delay_ms,
            self.run_at_ms,
            self.attempts,
            self.backoff_type,
            self.timeout_ms,
            self.max_stalled,
            self.keep_completed,
            self.keep_failed,
            self.dedup_key,
            self.expire_after_ms,
            self.group,
            self.lifo,
        ) == _DEFAULT_HEADER:
            header = f"{self.id}\0{self.name}\0"
        else:
            header = (
                f"{self.id}\0{self.name}\0{self.content_type}\0{self.priority}\0{self.delay_ms}\0"
                f"{self.run_at_ms}\0{self.attempts}\0{self.backoff_type}\0{self.backoff_delay_ms}\0"
                f"{self.backoff_jitter!r}\0{self.backoff_max_ms}\0{self.keep_completed}\0{self.keep_failed}\0"
                f"{self.timeout_ms}\0{self.max_stalled}\0{0}\0{self.dedup_key}\0{self.dedup_ttl_ms}\0"
                f"{self.expire_after_ms}\0{self.group}\0{'1' if self.lifo else '0'}\0{self.dedup_mode}\0"
            )
        return header, self.data, self.metadata, netstrings(self.extra) if self.extra else b""


@dataclass(slots=True)
class AddResult:
    now_ms: int
    ids: list[str]
    created: list[bool]
    waiting_added: int
    earliest_delayed_ms: int
    # Filled when the caller asked to read the stored jobs back.
    records: list[JobRecord] = field(default_factory=list)
    queue_paused: bool = False
    # A call published the queue's 'w' event: a worker waited for its jobs (common.lua publish_ready).
    published: bool = False
    # Jobs refused for want of room (an add checked against the size limits): index -> "queue" or "group".
    full: dict[int, str] = field(default_factory=dict)
    # Jobs whose dedup key was held: index -> "deduplicated" (nothing written but an EXTEND's ttl) or
    # "replaced" (the holder has their data now: Dedup.mode REPLACE). Their answer is the holder.
    dedup: dict[int, str] = field(default_factory=dict)
    # The reply of a claim folded into the add (Engine.add_jobs_many), None without one (or no queue).
    claim: ClaimResult | None = None


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """A claim for one worker: at most `take` waiting jobs, leased under one token for lease_ms."""

    take: int
    token: str
    worker_id: str
    lease_ms: int
    # The worker's labels as name, value pairs (WorkerHello.labels), for the jobs routed by worker labels
    # (JobOptions.worker_labels).
    labels: tuple[str, ...] = ()


@dataclass(slots=True)
class ClaimedJob:
    id: str
    name: str
    data: bytes
    content_type: str
    priority: int
    max_attempts: int
    attempts_made: int
    attempts_started: int
    stalled_count: int
    created_ms: int
    metadata: bytes
    timeout_ms: int
    lease_expiry_ms: int
    # A flow job's parents, chain root and workflow step: an encoded Job holding only those fields.
    flow: bytes = b""
    # Its fairness group (JobOptions.group); "" for none.
    group: str = ""

    @property
    def redelivery(self) -> bool:
        """An earlier start of this attempt was lost (worker crash or lease expiry).

        attempts_made counts finished runs, but a claimed job has not completed (completion ends it), so
        here it is the number of failed runs: starts beyond those plus this one were lost.
        """
        return self.attempts_started - 1 > self.attempts_made


@dataclass(slots=True)
class ClaimResult:
    code: int  # 0 ok, 1 paused, 2 rate limited (or held by a retry-after), 3 at the concurrency cap
    now_ms: int
    next_delayed_ms: int
    retry_after_ms: int
    # How long the queue's empty token bucket takes to fill to its burst (0: no rate limit).
    bucket_fill_ms: int = 0
    jobs: list[ClaimedJob] = field(default_factory=list)
    # Flow hand-offs the claim queued: jobs in a chain or workflow it found expired (includes/claim.lua).
    handoffs: int = 0
    # Routing groups' entries the claim passed over, their worker labels not the worker's: jobs may be ready
    # for another worker even when this claim took fewer than it asked for.
    unmatched: int = 0


@dataclass(slots=True)
class JobRecord:
    """A stored job as read by admin queries."""

    queue: str
    id: str
    fields: dict[str, bytes]

    def text(self, name: str, default: str = "") -> str:
        v = self.fields.get(name)
        return v.decode() if v is not None else default

    def int(self, name: str, default: int = 0) -> int:
        v = self.fields.get(name)
        return int(float(v)) if v not in (None, b"") else default

    def float(self, name: str, default: float = 0.0) -> float:
        v = self.fields.get(name)
        return float(v) if v not in (None, b"") else default

    def raw(self, name: str) -> bytes | None:
        return self.fields.get(name)

    @property
    def state(self) -> str:
        return job_state(self.fields.get("st"), bool(self.fields))


def job_state(st: bytes | None, exists: bool) -> str:
    """A job's state from its 'st' field, which a job added waiting has none of (includes/add.lua, and
    common.lua job_state for the scripts); "" for a job that does not exist."""
    if st is not None:
        return st.decode()
    return "waiting" if exists else ""


@dataclass(slots=True)
class QueueRecord:
    name: str
    fields: dict[str, bytes]

    @property
    def paused(self) -> bool:
        return self.fields.get("paused") == b"1"

    @property
    def created_ms(self) -> int:
        return int(self.fields.get("created", b"0"))

    @property
    def paused_until_ms(self) -> int:
        """When a timed pause lifts by itself (Redis time, ms); 0 for none."""
        return int(self.fields.get("paused_until", b"0"))

    @property
    def maintenance_until_ms(self) -> int:
        """When the maintenance window holding the queue ends (Redis time, ms); 0 outside the windows."""
        return int(self.fields.get("pwin", b"0"))

    @property
    def next_maintenance_ms(self) -> int:
        """When the next maintenance window starts (Redis time, ms); 0 for none."""
        return int(self.fields.get("mwnext", b"0"))


@dataclass(slots=True)
class Metrics:
    queue: str
    is_paused: bool
    waiting: int
    paused: int
    delayed: int
    active: int
    completed: int
    failed: int
    stalled: int
    stalled_total: int
    cancelled: int = 0
    # Failed runs (attempts, retried or not) since the queue was registered, by kind: raised an error, ended
    # by a timeout (the server's or the worker's own); stalled runs count in stalled_total.
    raised_total: int = 0
    timed_out_total: int = 0
    # The rest is read by engine/metrics.py (metrics.lua, and the worker registry for workers).
    sample_ms: int = 0  # Redis time of the read
    added_total: int = 0
    completed_total: int = 0
    failed_total: int = 0  # failed for good
    completed_last_minute: int = 0
    failed_last_minute: int = 0
    # The last five minutes (engine/stats.py RECENT_MINUTES): finished jobs, and the runs reported with a
    # duration as histogram counts (engine/stats.py buckets) and the sum of their durations.
    recent_completed: int = 0
    recent_failed: int = 0
    recent_runs: list[int] = field(default_factory=list)
    recent_run_us: int = 0
    # Every run reported with a duration since the queue was registered (Prometheus).
    all_runs: list[int] = field(default_factory=list)
    all_run_us: int = 0
    oldest_ready_ms: int = -1  # since when the longest-waiting ready job has been ready; -1: none
    rate_limit_tokens: float = 0.0
    held_until_ms: int = 0  # 0: no retry-after hold
    paused_until_ms: int = 0  # when a timed pause lifts (PauseQueueRequest.resume_after); 0: none
    maintenance_until_ms: int = 0  # when the maintenance window holding the queue ends; 0: none
    expired_total: int = 0  # jobs a claim found past their expiry (ended cancelled)
    groups: int = 0  # fairness groups with jobs waiting or active, or limits of their own
    groups_paused: int = 0  # fairness groups paused (PauseGroup)
    dead_letter_queue: str = ""  # where the queue's jobs that fail for good go ("": none)
    workers: int = 0
    free_capacity: int = 0
    history: list[MinuteActivity] = field(default_factory=list)
    # Per priority level, the first first: (ready jobs, since when the oldest of them is ready or -1).
    levels: list[tuple[int, int]] = field(default_factory=list)
    # Estimated bytes of the store the queue's keys hold (memory_estimate.lua), as of its last estimate
    # (engine/memory.py: kept 30 s by default).
    memory_bytes: int = 0


@dataclass(frozen=True, slots=True)
class NodeMemory:
    """One Redis/Valkey primary's memory, from its ``INFO memory``."""

    node: str  # "host:port" (a Cluster node's name), or "primary" when the address is not known
    used: int  # used_memory, bytes
    max: int  # maxmemory, bytes; 0 when unbounded (then Redis grows until the machine runs out)


@dataclass(slots=True)
class MinuteActivity:
    """One minute of a queue's activity (engine/keys.py ``minute``)."""

    start_ms: int
    added: int
    completed: int
    failed: int
    runs: int  # runs reported with a duration
    run_us: int  # the sum of their durations


@dataclass(slots=True)
class Housekeeping:
    """What the janitor has to do in a queue (Engine.housekeeping_due): bulk streams staged into it,
    finished jobs past their retention age, dead-letter copies or flow hand-offs waiting, redrives of
    dead-letter copies a server left half-done (engine/redrive.py), or, for a name registered with no queue
    behind it, the rest of an obliterate a lost server left (Engine.finish_obliterate)."""

    bulk: bool
    retention: bool
    dead_letters: bool
    flows: bool
    redrives: bool = False
    gone: bool = False
