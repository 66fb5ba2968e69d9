"""Loads the Lua scripts (one file per atomic operation) and runs them.

``-- @include NAME`` lines are replaced by ``lua/includes/NAME.lua``, less the helpers the script never
uses (`strip_unused`). redis-py's ``Script`` runs by EVALSHA and reloads on NOSCRIPT (after a Redis restart
or failover), so that case is handled here once.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Awaitable, Sequence
from importlib import resources
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

_INCLUDE = re.compile(r"^-- @include (\w+)\s*$", re.MULTILINE)
_LUA = resources.files("queue_manager_server.engine") / "lua"


# The scripts that record what becomes of work already running: outcomes, lease extensions, releases,
# recoveries, and the worker registry entry a (re)connecting worker's hello writes. Once Redis reaches
# maxmemory (noeviction) it refuses a script whose first write may grow memory, so an add gets
# RESOURCE_EXHAUSTED and changes nothing; these run anyway (Redis ≥ 7 script flag), so a full store never
# strands running jobs (their extensions and completions were refused, their workers' streams broke, and
# they stayed active until memory was raised). What they write past maxmemory is the outcomes of the jobs
# that run meanwhile; retention removes finished jobs as usual.
ALLOW_OOM = frozenset({"complete", "fail", "retry_later", "extend", "release", "reap", "workers_seen"})
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


@functools.cache
def _source(name: str, flags: bool = True) -> str:
    text = (_LUA / f"{name}.lua").read_text()
    text = strip_unused(_INCLUDE.sub(lambda m: (_LUA / "includes" / f"{m.group(1)}.lua").read_text(), text))
    return _ALLOW_OOM_FLAG + text if flags and name in ALLOW_OOM else text


async def resend_refused(scripts: Sequence[Any], stack: Sequence[Sequence[Any]], results: list[Any]) -> None:
    """Where Redis answered NOSCRIPT (it lost its script cache: a restart or failover; the refused calls
    changed nothing), loads `scripts` and sends those commands of `stack` again in one pipeline, their replies
    put in place in `results`."""
    refused = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if not refused or not scripts:
        return
    client = scripts[0].registered_client
    for script in scripts:
        await cast("Awaitable[str]", client.script_load(script.script))
    retry = cast("Pipeline", client.pipeline(transaction=False))
    for i in refused:
        retry.execute_command(*stack[i])
    for i, r in zip(refused, await execute(retry, raise_on_error=False), strict=True):
        results[i] = r


async def execute(pipe: Pipeline, raise_on_error: bool = True) -> list[Any]:
    """Runs a pipeline in one round trip and always hands its connection back.

    redis-py would send ``SCRIPT EXISTS`` before every pipeline that carries a script (a second round trip
    on the hot path: each AddJob paid it). Instead the scripts' EVALSHAs go out as they are, and only when
    Redis answers NOSCRIPT (it lost its script cache: a restart or failover) are the scripts loaded and the
    refused calls, which changed nothing, sent again. The first other error is raised as usual, or with
    raise_on_error=False left in its place among the results (a pipeline that serves several callers, each
    of whom gets its own command's outcome).
    """
    scripts, pipe.scripts = list(pipe.scripts), set()
    stack = [args for args, _ in pipe.command_stack]
    try:
        results = await pipe.execute(raise_on_error=False)
    finally:
        await pipe.reset()  # type: ignore[no-untyped-call]
    await resend_refused(scripts, stack, results)
    for i, r in enumerate(results):
        if isinstance(r, ResponseError):
            pipe.annotate_exception(r, i + 1, stack[i])
            if raise_on_error:
                raise r
    return list(results)


class Scripts:
    """All scripts, registered on one client; attribute names equal the .lua file names."""

    NAMES = (
        "add_jobs",
        "claim",
        "complete",
        "fail",
        "extend",
        "progress",
        "release",
        "reap",
        "promote",
        "register_queue",
        "set_paused",
        "metrics",
        "remove_job",
        "clean",
        "clean_waiting",
        "migrate_waiting",
        "obliterate",
        "handoff_done",
        "stage_jobs",
        "publish_staged",
        "discard_staged",
        "flow_pending",
        "flow_done",
        "chain_failed",
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
        "promote_job",
        "change_priority",
        "wf_starting",
        "wf_create",
        "wf_step_done",
        "wf_started",
        "wf_cancel",
        # the worker registry (engine/workers.py)
        "workers_seen",
        "list_workers",
    )

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._scripts: dict[str, AsyncScript] = {n: redis.register_script(_source(n)) for n in self.NAMES}

    def get(self, name: str) -> AsyncScript:
        return self._scripts[name]

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
                script = self._scripts[name] = self._redis.register_script(_source(name, flags=False))
                await script.registered_client.script_load(script.script)
