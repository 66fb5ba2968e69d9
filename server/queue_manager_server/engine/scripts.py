"""Loads the Lua scripts (one file per atomic operation) and runs them.

``-- @include NAME`` lines are replaced by ``lua/includes/NAME.lua``, less the helpers the script never
uses (`strip_unused`). redis-py's ``Script`` runs by EVALSHA and reloads on NOSCRIPT (after a Redis restart
or failover); pipelines and held connections send bare EVALSHAs, and what Redis refuses NOSCRIPT there is
loaded and sent again in one place, `resend_refused`, which finds each script by its SHA1 (`Scripts.source`).

A server on the test clock (Settings.test_clock, queue_manager_server.testing) loads every script with
``lua/includes/test_clock.lua`` at its top and each ``redis.call('TIME')`` turned into a call of it, which
adds the offset kept in one key (`with_test_clock`); other servers' scripts are the files as they are.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from queue_manager_server.engine.clients import Client, Pipe

_INCLUDE = re.compile(r"^-- @include (\w+)\s*$", re.MULTILINE)
_LUA = resources.files("queue_manager_server.engine") / "lua"


# The scripts that record what becomes of work already running: outcomes, lease extensions, releases,
# recoveries, and the worker registry entry a (re)connecting worker's hello writes. Once Redis reaches
# maxmemory (noeviction) it refuses a script whose first write may grow memory, so an add gets
# RESOURCE_EXHAUSTED and changes nothing; these run anyway (Redis ≥ 7 script flag), so a full store never
# strands running jobs (their extensions and completions were refused, their workers' streams broke, and
# they stayed active until memory was raised). What they write past maxmemory is the outcomes of the jobs
# that run meanwhile; retention removes finished jobs as usual. The memory estimate keeps its few bytes
# (memory_estimate.lua) so a full store still says which queue fills it.
ALLOW_OOM = frozenset(
    {"complete", "fail", "retry_later", "extend", "release", "reap", "workers_seen", "memory_estimate"}
)
_ALLOW_OOM_FLAG = "#!lua flags=allow-oom\n"


# A top-level local: a function (up to its closing ``end`` at the start of a line) or a value (up to the
# line where its brackets balance).
_TOP_FUNCTION = re.compile(r"^local function (\w+)\(.*?^end\n", re.MULTILINE | re.DOTALL)
_TOP_VALUE = re.compile(r"^local (\w+) = ", re.MULTILINE)
_WORD = re.compile(r"\w+")
# A quoted string (kept) or a comment (blanked out before names are looked for).
_STRING_OR_COMMENT = re.compile(r"""'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"|--[^\n]*""")


def _code(text: str) -> str:
    """The text with its comments blanked out (same length, so positions still match)."""
    return _STRING_OR_COMMENT.sub(lambda m: m[0] if m[0][0] != "-" else " " * len(m[0]), text)


def _value_end(code: str, start: int) -> int:
    """The end of the line where the statement starting at `start` has balanced brackets (code: comments
    blanked out)."""
    depth, i = 0, start
    while True:
        end = code.index("\n", i) + 1
        line = code[i:end]
        depth += sum(line.count(c) for c in "({[") - sum(line.count(c) for c in ")}]")
        if depth <= 0:
            return end
        i = end


def strip_unused(text: str) -> str:
    """Drops the top-level local functions and literal values that nothing else in the script names.

    Every script call runs its chunk from the top, so each helper of an include is a closure built anew and
    each table literal a table filled anew, used or not: about 4 µs of Valkey CPU per call for
    includes/common.lua alone. A name counts as used when it appears in the code (not a comment) anywhere
    outside its own definition; what only dropped helpers used goes in a later round.
    """
    while True:
        code = _code(text)
        spans = [(m.group(1), m.start(), m.end()) for m in _TOP_FUNCTION.finditer(code)]
        for m in _TOP_VALUE.finditer(code):
            end = _value_end(code, m.start())
            if "(" not in code[m.start() : end]:  # a literal (a call might write: always kept)
                spans.append((m.group(1), m.start(), end))
        uses = Counter(_WORD.findall(code))
        # Named nowhere but in its own definition (a recursive helper names itself there).
        unused = [(a, b) for name, a, b in spans if uses[name] == _WORD.findall(code, a, b).count(name)]
        if not unused:
            return text
        for start, end in sorted(unused, reverse=True):
            text = text[:start] + text[end:]


_TIME = "redis.call('TIME')"


def _lua_string(value: str) -> str:
    """`value` as a Lua string literal (a key prefix may hold any character)."""
    safe = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:{}_-.")
    # Any other byte as a three-digit decimal escape (a shorter one would take a following digit in).
    return '"' + "".join(chr(b) if b in safe else f"\\{b:03d}" for b in value.encode()) + '"'


def with_test_clock(text: str, clock_key: str) -> str:
    """The script text (includes inlined) reading Redis TIME plus the test clock's offset, kept in
    `clock_key` (lua/includes/test_clock.lua)."""
    clock = (_LUA / "includes" / "test_clock.lua").read_text()
    clock = clock.replace("TEST_CLOCK_KEY", _lua_string(clock_key))
    # The helper's own TIME call is the one left as it is: it is put in after the others are replaced.
    return clock + text.replace(_TIME, "test_clock_time()")


@functools.cache
def _source(name: str, flags: bool = True, clock_key: str | None = None) -> str:
    text = (_LUA / f"{name}.lua").read_text()
    text = _INCLUDE.sub(lambda m: (_LUA / "includes" / f"{m.group(1)}.lua").read_text(), text)
    if clock_key is not None:
        text = with_test_clock(text, clock_key)
    text = strip_unused(text)
    return _ALLOW_OOM_FLAG + text if flags and name in ALLOW_OOM else text


class Scripts:
    """All scripts, registered on one client; attribute names equal the .lua file names."""

    NAMES = (
        "add_jobs",
        "size_room",
        "claim",
        "complete",
        "fail",
        "extend",
        "progress",
        "release",
        "reap",
        "promote",
        "age_waiting",  # priority bounds (engine/aging.py)
        "expire_waiting",  # the expiry sweep (components/expiry.py)
        "resume_due",  # timed pauses (engine/pauses.py)
        "set_window",  # maintenance windows (windows.py)
        "set_group_window",  # a fairness group's maintenance windows (windows.py)
        "register_queue",
        "set_paused",
        "metrics",
        "memory_estimate",  # per-queue memory (engine/memory.py)
        "remove_job",
        "clean",
        "clean_waiting",
        "migrate_waiting",
        "obliterate",
        "release_obliterate",
        "handoff_done",
        "stage_jobs",
        "publish_staged",
        "discard_staged",
        "flow_pending",
        "flow_done",
        "chain_failed",
        # children added at run time (engine/children.py)
        "children_add",
        "children_wait",
        "children_done",
        "children_attach",
        "children_link",
        "children_waits",
        # external events (engine/external_events.py)
        "event_wait",
        "push_event",
        "wake_event_batch",
        "upsert_event_trigger",
        "delete_event_trigger",
        # external events on a Redis Cluster (engine/event_pushes.py)
        "index_event_wait",
        "record_event",
        "deliver_event",
        "touch_event_push",
        "event_done",
        "event_index_due",
        "event_index_sweep",
        # cancel, timeouts, retry-after (engine/control.py)
        "cancel_job",
        "time_out",
        "retry_later",
        "upsert_schedule",
        "fire_schedule",
        "delete_schedule",
        # job control (engine/job_control.py)
        "add_logs",
        "job_logs",
        "watch_job",
        "retry_job",
        "retry_jobs",
        # filtered listing and bulk actions (engine/search.py)
        "list_matching",
        "count_matching",
        "retry_matching",
        "cancel_matching",
        "remove_matching",
        "promote_job",
        "change_priority",
        "update_job_data",
        "reschedule_job",
        # redriving dead-letter copies (engine/redrive.py)
        "redrive_take",
        "redrive_jobs",
        "redrive_done",
        "wf_starting",
        "wf_create",
        "wf_step_done",
        "wf_started",
        "wf_cancel",
        # fairness groups (engine/groups.py)
        "list_groups",
        "set_group_limits",
        "set_group_paused",
        # the worker registry (engine/workers.py)
        "workers_seen",
        "list_workers",
        # job events (engine/job_events.py)
        "watch_events",
    )
    # Loaded only on the test clock (engine/clock.py): its reading and its moving forward.
    TEST_CLOCK_NAMES = ("clock_now", "advance_clock")

    def __init__(self, redis: Client, clock_key: str | None = None) -> None:
        """Args:
        redis: The client the scripts run on.
        clock_key: The test clock's offset key (engine/keys.py clock_offset), for a server on the test clock;
            None (every other server): the scripts read Redis TIME alone.
        """
        self._redis = redis
        self._clock_key = clock_key
        self._scripts: dict[str, AsyncScript] = {}
        # Every script text by its SHA1, the flagged and the unflagged one (`load_all`): what `resend_refused`
        # loads when Redis refuses an EVALSHA.
        self._by_sha: dict[str, str] = {}
        for name in self.NAMES + (self.TEST_CLOCK_NAMES if clock_key is not None else ()):
            self._register(name, _source(name, clock_key=clock_key))

    def _register(self, name: str, text: str) -> AsyncScript:
        script = self._scripts[name] = self._redis.register_script(text)
        self._by_sha[script.sha] = text
        return script

    @property
    def client(self) -> Client:
        return self._redis

    def get(self, name: str) -> AsyncScript:
        return self._scripts[name]

    def command(self, name: str, keys: Sequence[Any], args: Sequence[Any]) -> tuple[Any, ...]:
        """A call of the script `name` as a bare EVALSHA command (what Redis refuses NOSCRIPT is loaded and
        sent again: `resend_refused`)."""
        return ("EVALSHA", self._scripts[name].sha, len(keys), *keys, *args)

    def call_in(self, pipe: Pipe, name: str, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Queues a call of the script `name` on a pipeline (`command`; Store.execute sends it)."""
        pipe.execute_command(*self.command(name, keys, args))

    def source(self, sha: str | bytes) -> str | None:
        """The text of the script with this SHA1 (None: not one of these)."""
        return self._by_sha.get(sha.decode() if isinstance(sha, bytes) else sha)

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._scripts[name](keys=keys, args=args)

    async def load_all(self) -> None:
        """Loads every script up front so a syntax error shows at start, not on first use.

        A Redis older than 7 does not know script flags: the flagged scripts are then registered without
        theirs (they behave as before: refused like any write once maxmemory is reached)."""
        for name, script in self._scripts.items():
            try:
                await script.registered_client.script_load(script.script)
            except ResponseError:
                if name not in ALLOW_OOM:
                    raise
                script = self._register(name, _source(name, flags=False, clock_key=self._clock_key))
                await script.registered_client.script_load(script.script)


async def resend_refused(
    scripts: Scripts,
    stack: Sequence[Sequence[Any]],
    results: list[Any],
    pipeline: Callable[[], Pipe],
    send: Callable[[Pipe], Awaitable[list[Any]]],
) -> None:
    """Where Redis answered NOSCRIPT (it lost its script cache: a restart or failover; the refused calls
    changed nothing), loads the scripts those EVALSHAs name (on every primary of a Cluster) and sends those
    commands of `stack` again in one pipeline (`pipeline`, sent as it is by `send`: a second refusal stands),
    their replies put in place in `results`."""
    refused = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if not refused:
        return
    for sha in dict.fromkeys(stack[i][1] for i in refused):
        text = scripts.source(sha)
        if text is None:
            return  # not one of ours: the refusals stand
        await scripts.client.script_load(text)
    retry = pipeline()
    for i in refused:
        retry.execute_command(*stack[i])
    for i, r in zip(refused, await send(retry), strict=True):
        results[i] = r
