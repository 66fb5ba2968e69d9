"""Every Redis key the engine uses, built in one place.

All keys of one queue carry the ``{queue}`` hash tag so every script touches a single hash slot, as
Redis/Valkey Cluster requires (engine/store.py; docs/operations.md says what a Cluster changes).
Queue names are validated (``validate.queue_name``) so they never contain ``{``, ``}`` or ``:``.
"""

from __future__ import annotations

from dataclasses import dataclass

# Job priorities, the first runs first: one waiting list each (common.lua LEVELS).
PRIORITY_LEVELS = range(1, 6)


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue."""

    prefix: str
    queue: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.queue}}}"

    @property
    def meta(self) -> str:
        """hash: settings (flattened for Lua), paused flag, stalled_total, config blob. The paused flag
        holds while an operator's pause (``pman``; ``paused_until``, ms: when a timed one lifts) or a
        maintenance window (``pwin``: when it ends) does; ``mwin`` is the windows' digest, ``mwapplied`` the
        one last applied, ``mwb`` the next window boundary and ``mwnext`` the next window's start
        (windows.py, set_window.lua)."""
        return f"{self.base}:meta"

    @property
    def obliterating(self) -> str:
        """hash: the obliterate run removing the queue (ObliterateQueue, or the finish of one a lost server
        left): ``tok`` its token, ``until`` when its lease ends (ms, Redis clock; each of its calls moves it
        on). It exists from the run's first call until the run gives the name up (lua/obliterate.lua,
        lua/release_obliterate.lua); RegisterQueue refuses the name meanwhile."""
        return f"{self.base}:obliterating"

    @property
    def waiting(self) -> str:
        """The base name of the waiting lists (``waiting_levels``), passed to the scripts. The key itself
        holds only a sorted set an older server left (job id -> priority * 2^40 + seq), until
        migrate_waiting.lua has moved it into the lists."""
        return f"{self.base}:waiting"

    @property
    def waiting_levels(self) -> list[str]:
        """lists: the waiting job ids of each priority level, the first level first, FIFO from the head
        (common.lua level_key)."""
        return [f"{self.base}:waiting:{p}" for p in PRIORITY_LEVELS]

    def group_levels(self, group: str) -> list[str]:
        """lists: the waiting job ids of a fairness group (JobOptions.group), one per priority level as
        ``waiting_levels``. The scripts derive them and the group keys below from the waiting key (common.lua
        level_key, which documents the rotation)."""
        return [f"{self.base}:gwait:{p}:{group}" for p in PRIORITY_LEVELS]

    @property
    def groups(self) -> str:
        """zset: the fairness groups with jobs waiting or active or limits of their own, all scored 0 (so by
        name). Beside it: ``gring`` (zset: ``<level>:<group>`` -> level * 2^44 + turn, the rotation),
        ``gdelay`` (zset: ``<level>:<group>`` -> when its next token is due, ms), ``gpark`` (hash: groups held
        back at their concurrency limit), ``gwaiting`` / ``gact`` (hashes: group -> waiting / active jobs),
        ``glimits`` (hash: group -> "concurrency rate-max rate-ms max-size", its own limits), ``gtok`` (hash:
        group -> "tokens ms", its token bucket), ``gpaused`` (hash: paused groups, for any reason), ``gpman``
        (hash: groups an operator paused), ``gpuntil`` (zset: group -> when its timed pause lifts, ms),
        ``gpwin`` (hash: group -> when the maintenance window holding it ends, ms), ``gwnext`` (hash: group
        -> when its next window starts, ms), ``group_windows`` and ``group_window_bounds``; meta ``gw`` counts
        the waiting jobs of all groups, ``gturn`` the rotation's turns, ``g_paused`` the paused groups,
        ``g_conc`` / ``g_rl_max`` / ``g_rl_ms`` / ``g_max`` the queue's group limits (``g_max_own``: some
        group has a max size of its own)."""
        return f"{self.base}:groups"

    @property
    def group_windows(self) -> str:
        """hash: fairness group -> its maintenance windows (GroupLimits.maintenance_windows: a GroupLimits
        holding only them, serialized), kept apart from its limits string (``groups``; windows.py)."""
        return f"{self.base}:gwin"

    @property
    def group_window_bounds(self) -> str:
        """zset: fairness group -> its next window boundary (when the window holding it ends, or the next
        starts; ms, Redis clock; 0: its windows changed and are applied at once), what the pause timer reads
        (set_group_window.lua)."""
        return f"{self.base}:gwb"

    @property
    def group_waiting(self) -> str:
        """hash: fairness group -> its waiting jobs (see ``groups``)."""
        return f"{self.base}:gwaiting"

    @property
    def expiring(self) -> str:
        """zset: job id -> its expiry (ms, Redis clock) when written, for jobs with one
        (JobOptions.expire_after): what the expiry sweep looks at (lua/expire_waiting.lua). Scripts derive it
        from the job prefix."""
        return f"{self.base}:expiring"

    @property
    def delayed(self) -> str:
        """zset: job id -> run-at time (ms, Redis clock)."""
        return f"{self.base}:delayed"

    @property
    def active(self) -> str:
        """zset: job id -> lease expiry (ms, Redis clock)."""
        return f"{self.base}:active"

    @property
    def completed(self) -> str:
        """zset: job id -> finish time (ms)."""
        return f"{self.base}:completed"

    @property
    def failed(self) -> str:
        """zset: job id -> finish time (ms)."""
        return f"{self.base}:failed"

    @property
    def cancelled(self) -> str:
        """zset: job id -> finish time (ms) of cancelled jobs (kept under the failed-job retention)."""
        return f"{self.base}:cancelled"

    @property
    def deadlines(self) -> str:
        """zset: job id -> deadline (ms, Redis clock) of active runs of jobs with a timeout: start + timeout.

        Scripts derive it from the job prefix (common.lua ``queue_key``)."""
        return f"{self.base}:deadlines"

    @property
    def limiter(self) -> str:
        """hash: token bucket {tokens, ts} of the queue's rate limit, and ``hold``: no job starts before
        this time (ms, Redis clock), set by a worker's retry-after whether or not the queue has a limit."""
        return f"{self.base}:limiter"

    @property
    def outbox(self) -> str:
        """list: ids of jobs failed for good whose dead-letter copy is not yet written (hand-off)."""
        return f"{self.base}:dlq-outbox"

    @property
    def redrive(self) -> str:
        """zset: copy id -> when it was taken (ms, Redis clock): a dead-letter queue's redrive outbox, the
        copies taken out of it whose original queue may not have the job back yet (engine/redrive.py). Each
        taken copy's hash is ``redrive_entry``."""
        return f"{self.base}:redrive"

    @property
    def redrive_entry_prefix(self) -> str:
        """Prefix of the redrive outbox entries: ``<redrive_entry_prefix><copy id>``, each a hash (the taken
        copy's fields, plus ``rdt`` its take's token and ``rdr`` "1" when the original's data is replaced)."""
        return f"{self.base}:redrive:"

    @property
    def redriven(self) -> str:
        """zset: redrive token -> when applied (ms, Redis clock): the redrives an original queue carried
        out whose dead-letter outbox entry may still be there, so a replay changes nothing
        (lua/redrive_jobs.lua)."""
        return f"{self.base}:redriven"

    @property
    def bulk(self) -> str:
        """hash: bulk stream id -> Redis time (ms) of its last staged chunk, for streams staged into this
        queue and not yet published or rolled back."""
        return f"{self.base}:bulk"

    @property
    def staged_prefix(self) -> str:
        """Prefix of the staged-stream lists: ``<staged_prefix><stream id>``."""
        return f"{self.base}:staged:"

    def staged(self, stream_id: str) -> str:
        """list: a bulk stream's jobs for this queue, 3 strings each, until the stream is published."""
        return f"{self.staged_prefix}{stream_id}"

    @property
    def flow_outbox(self) -> str:
        """list: ids of finished jobs whose flow hand-off (next chain link, workflow steps, waiting parents)
        is not yet done, and of jobs that parents waited for removed before they finished.

        Scripts derive this key and the flow entries from the job prefix (common.lua ``queue_key``)."""
        return f"{self.base}:flow-outbox"

    def flow(self, job_id: str) -> str:
        """hash: a finished flow job's outcome and flow fields (st, fts, res, rct, err, name, chn, par; md,
        its metadata, when a chain link follows it; kup, its waiting parents), kept until its hand-off is
        done, so retention may delete the job meanwhile. A job removed before it finished has st ``removed``
        and how it was removed in err (common.lua ``on_removed``)."""
        return f"{self.base}:flow:{job_id}"

    def logs(self, job_id: str) -> str:
        """list: a job's log lines, ``<ms> <text>``, oldest first, its last 1,000 kept; deleted with the job.

        Scripts derive it and the dedup keys from the job prefix (common.lua ``job_logs_key``)."""
        return f"{self.base}:logs:{job_id}"

    def dedup(self, key: str) -> str:
        """string: the id of the job holding a dedup key, with the key's ttl (PX) or none (held until the
        job finishes or is removed)."""
        return f"{self.base}:dedup:{key}"

    @property
    def schedules(self) -> str:
        """hash: schedule id -> encoded Schedule (definition, create and update time; engine/schedules.py)."""
        return f"{self.base}:schedules"

    @property
    def schedule_due(self) -> str:
        """zset: schedule id -> the occurrence it waits for (ms, Redis clock); none once it is over."""
        return f"{self.base}:schedule-due"

    @property
    def schedule_runs(self) -> str:
        """hash: schedule id -> "<revision> <run count> <last run ms> <last job id>" (its firing state)."""
        return f"{self.base}:schedule-runs"

    @property
    def stats(self) -> str:
        """hash: the queue's activity since it was registered: ``a`` jobs added, ``c`` completed, ``f``
        failed for good, ``us`` the sum of the reported run durations (µs), ``h<i>`` runs per duration
        bucket (engine/stats.py), ``r`` and ``t`` failed runs that raised and that timed out (these two
        only here, not per minute). Scripts derive it and the minute hashes from the job prefix
        (stats.lua)."""
        return f"{self.base}:stats"

    def minute(self, minute: int) -> str:
        """hash: one minute's activity (minute = Redis ms // 60000), the fields of ``stats`` but ``r`` and
        ``t``. Expires 65 minutes after its last write (the hour of history)."""
        return f"{self.base}:m:{minute}"

    def seconds(self, minute: int) -> str:
        """hash: ``c<s>`` and ``f<s>``, the completions and failures for good in second s of a minute, for
        the exact last-60-seconds rate. Expires 3 minutes after its last write."""
        return f"{self.base}:s:{minute}"

    @property
    def memory(self) -> str:
        """string: the queue's last memory estimate in bytes (memory_estimate.lua), expiring after the
        estimate's interval (engine/memory.py)."""
        return f"{self.base}:memory"

    @property
    def job_prefix(self) -> str:
        """Prefix of the per-job hashes: ``<job_prefix><id>``."""
        return f"{self.base}:job:"

    def job(self, job_id: str) -> str:
        """hash: one job's fields (see engine/records.py for the field names)."""
        return f"{self.job_prefix}{job_id}"

    def state_set(self, state: str) -> str:
        """The zset holding jobs of a state other than waiting and paused (``waiting_levels``)."""
        return {
            "delayed": self.delayed,
            "active": self.active,
            "completed": self.completed,
            "failed": self.failed,
            "cancelled": self.cancelled,
        }[state]


def registry(prefix: str) -> str:
    """set: names of registered queues (not slot-bound; read by admin listing and background loops)."""
    return f"{prefix}:queues"


def workers_index(prefix: str) -> str:
    """zset: worker id -> when its registry entry expires (ms, Redis clock); the server holding its stream
    pushes that back while the stream is open (engine/workers.py). Under the ``{workers:registry}`` hash tag
    with the entries (queue names cannot hold ':', so no queue shares it)."""
    return f"{prefix}:{{workers:registry}}:index"


def worker_prefix(prefix: str) -> str:
    """Prefix of the worker entries: ``<worker_prefix><worker id>``, each a hash of the fields
    engine/workers.py lists, expiring with its index entry."""
    return f"{prefix}:{{workers:registry}}:worker:"


def clock_offset(prefix: str) -> str:
    """string: how far (ms) the test clock has been moved forward, which a server on the test clock adds to
    Redis TIME (engine/clock.py); absent: 0. No other server reads it. Not slot-bound: the test clock is
    refused on a Cluster."""
    return f"{prefix}:test-clock"


def events_channel(prefix: str) -> str:
    """pub/sub channel: ``w <queue>`` when jobs become waiting (or a slot of a queue with a concurrency cap
    frees), ``d <queue> <ms>`` when one is delayed, ``c <queue> <id> <token> <reason>`` when the run holding
    that lease must stop (cancelled), ``t <queue> <id> <token> <reason>`` when it must stop because the
    server timed it out (time_out.lua), ``s <queue> <ms>`` when a schedule of the queue is
    created or changed and next falls due then, ``j <queue> <id> <state>`` when a job some WaitForJob follows
    changes state (common.lua ``notify_job``; a removed job says ``removed``).

    Scripts that are not given the channel derive it from the job prefix: ``<prefix>:{<queue>}:job:`` gives
    ``<prefix>:events`` (common.lua ``slot_freed``)."""
    return f"{prefix}:events"


def stream_decision(prefix: str, stream_id: str) -> str:
    """string: ``c`` (committed) or ``a`` (rolled back) for a bulk stream; the one write that decides it.

    Not slot-bound to a queue, because one stream may stage jobs into several queues.
    """
    return f"{prefix}:stream:{stream_id}"


def workflow_run(prefix: str, run_id: str) -> str:
    """hash: a workflow run and its step graph (lua/includes/workflow.lua lists the fields), under its own
    ``{wf:<run id>}`` hash tag (queue names cannot hold ':', so no queue shares it)."""
    return f"{prefix}:{{wf:{run_id}}}:run"


def workflow_registry(prefix: str) -> str:
    """zset: run id -> creation time (ms), for listing runs newest first and expiring old ones."""
    return f"{prefix}:workflows"


def workflow_starting(prefix: str) -> str:
    """zset: run id -> time (ms) of runs whose first steps may not have their jobs yet; the janitor starts
    them if the server that created the run died before it did."""
    return f"{prefix}:workflows-starting"


def event_waiters(prefix: str, key: str) -> str:
    """set: the job keys of the jobs waiting for external events of this key (WaitForEvent), on one Redis
    server. Scripts derive it from a job prefix (common.lua event_wait_drop). On a Cluster each queue keeps
    its own (``queue_event_waiters``), since a push there reaches one queue per script."""
    return f"{prefix}:event-waiters:{key}"


def queue_event_waiters(prefix: str, queue: str, key: str) -> str:
    """set: on a Cluster, the job keys of the queue's jobs waiting for events of this key (common.lua
    event_wait_drop derives it from a job prefix when the job holds 'ewq')."""
    return f"{QueueKeys(prefix, queue).base}:event-waiters:{key}"


def event_push_waiters(prefix: str, push_id: str) -> str:
    """set: on one Redis server, the waiters set of a push's key as the push found it, when it held more
    than a batch (push_event.lua renames it so): wake_event_batch.lua pops it a batch at a time."""
    return f"{prefix}:event-push-waiters:{push_id}"


def queue_event_push_waiters(prefix: str, queue: str, push_id: str) -> str:
    """set: on a Cluster, the queue's waiters set of a push's key as the push's first call in the queue
    found it (deliver_event.lua renames it so and pops it a batch per call)."""
    return f"{QueueKeys(prefix, queue).base}:event-push-waiters:{push_id}"


def event_delivered(prefix: str, queue: str, push_id: str) -> str:
    """string: on a Cluster, what a push did in the queue so far (JSON: the ids woken, the ids added, the
    cut, how many woken, whether done: deliver_event.lua), so carrying its share out again does nothing
    twice; kept for EVENT_ID_WINDOW_MS."""
    return f"{QueueKeys(prefix, queue).base}:event-push:{push_id}"


# On a Cluster, the keys of pushes (their records, the keys' indexes, event ids) share the event triggers'
# hash tag: recording a push checks the triggers' version, reads the index and deduplicates in one script.
def event_index(prefix: str, key: str) -> str:
    """zset: on a Cluster, the queues with jobs that may wait for events of this key -> the time (ms) the
    queue was last indexed for it (index_event_wait.lua; services/event_pushes.py)."""
    return f"{prefix}:{{event-triggers}}:index:{key}"


def event_indexed_keys(prefix: str) -> str:
    """zset: on a Cluster, the event keys with an index -> the time (ms) one was last indexed, which the
    janitor sweeps for queues whose waits ended with no push (event_index_due.lua)."""
    return f"{prefix}:{{event-triggers}}:indexed"


def event_pushes(prefix: str) -> str:
    """zset: on a Cluster, push id -> time (ms) recorded or of its last round, of the pushes not carried out
    to every queue yet (record_event.lua adds, touch_event_push.lua marks each further round, event_done.lua
    clears, the janitor carries out those a lost server left). On one
    server, those of the pushes carried out in batches -> the time of their last batch (push_event.lua,
    wake_event_batch.lua)."""
    return f"{prefix}:{{event-triggers}}:pushes"


def event_push(prefix: str, push_id: str) -> str:
    """hash: on a Cluster, the record of a push not carried out yet (record_event.lua lists its fields); on
    one server, of a push carried out in batches (push_event.lua), kept a while as its answer once done."""
    return f"{prefix}:{{event-triggers}}:push:{push_id}"


def cluster_event_pushed(prefix: str, event_id: str) -> str:
    """string: ``event_pushed`` on a Cluster, beside the pushes' records (JSON as there, with the push id
    last while the push is not carried out yet)."""
    return f"{prefix}:{{event-triggers}}:event-id:{event_id}"


def event_pushed(prefix: str, event_id: str) -> str:
    """string: the answer of the first PushEvent of an event id (JSON, push_event.lua lists it: pushed ms,
    the jobs woken and added, a push id while it wakes in batches, how many woken), kept for
    EVENT_ID_WINDOW_MS (services/external_events.py): a repeat is a no-op."""
    return f"{prefix}:event-id:{event_id}"


def event_triggers(prefix: str) -> str:
    """hash: event trigger id -> its definition (an encoded EventTrigger: services/event_triggers.py). Beside
    it, ``event_triggers_version``; both under one hash tag, so one script writes them together."""
    return f"{prefix}:{{event-triggers}}"


def event_triggers_version(prefix: str) -> str:
    """string: a counter every change of the event triggers raises, so a push planned on the triggers it
    read writes nothing when they changed since (push_event.lua)."""
    return f"{prefix}:{{event-triggers}}:version"
