"""The wrappers `bench/hops_site/sitecustomize.py` installs: timestamps of each hop from add to start.

Events (wall clock ns, so the processes' records join on job id):

- ``clsend``: the producer's client sent the job's add (keyed by the producer's stamp, not by job id);
- ``handler``: the server's AddJob handler started, or its AddJobStream message was taken (after gRPC and
  the interceptors);
- ``add``: the server's coalescer took the AddJob (its id is chosen here);
- ``send`` / ``written``: the coalesced Redis write went out / came back;
- ``sub``: the pub/sub wake-up of the job's queue reached the notifier (per queue, not per job);
- ``claim`` / ``claimed``: the claim that leased the job went out / came back (``empty``: a claim that
  leased nothing);
- ``answer``: the server handed the add's answer to gRPC; ``clrecv``: the producer's client read it;
- ``yield``: the worker stream's handler handed the delivery to gRPC;
- ``recv``: the worker read the delivery; ``start``: its processor started (``stamp``: the producer's
  clock when it called add_job, from the job's data).
"""

from __future__ import annotations

import atexit
import contextvars
import importlib.abc
import importlib.util
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

_lines: list[str] = []
_handler: contextvars.ContextVar[int] = contextvars.ContextVar("hops_handler", default=0)
_lock = threading.Lock()
_path: Path | None = None


def note(event: str, key: str, ns: int | None = None) -> None:
    _lines.append(f"{event} {key} {ns if ns is not None else time.time_ns()}")


def _flush() -> None:
    if _path is None:
        return
    with _lock:
        chunk = _lines[:]
        del _lines[: len(chunk)]
        if chunk:
            with open(_path, "a") as out:
                out.write("\n".join(chunk) + "\n")


def _flusher() -> None:
    while True:
        time.sleep(0.5)
        _flush()


def _patch_server() -> None:
    from queue_manager_server.components import notifier
    from queue_manager_server.engine.engine import Engine
    from queue_manager_server.services import adds, jobs, workers

    real_new_id = adds.new_job_id

    def new_job_id() -> str:
        job_id = real_new_id()
        note("add", job_id)
        handler_ns = _handler.get()
        if handler_ns:
            note("handler", job_id, handler_ns)
        return job_id

    adds.new_job_id = new_job_id  # type: ignore[assignment]

    real_add = jobs.JobHandlers._add

    async def add(self: Any, request: Any) -> Any:
        _handler.set(time.time_ns())
        return await real_add(self, request)

    jobs.JobHandlers._add = add  # type: ignore[method-assign]

    real_submitted = jobs.JobHandlers._submitted

    def submitted(self: Any, items: Any) -> Any:
        _handler.set(time.time_ns())
        return real_submitted(self, items)

    jobs.JobHandlers._submitted = submitted  # type: ignore[method-assign]

    real_answered = jobs.JobHandlers._answered

    def answered(self: Any, into: Any, *args: Any) -> None:
        first = len(into)
        real_answered(self, into, *args)
        t = time.time_ns()
        for outcome in list(into)[first:]:
            kind = outcome.WhichOneof("outcome")
            if kind == "created":  # a brief answer
                note("answer", outcome.created.id, t)
            elif kind == "added":
                note("answer", outcome.added.job.id, t)

    jobs.JobHandlers._answered = answered  # type: ignore[method-assign]

    real_many = Engine.add_jobs_many

    async def add_jobs_many(self: Engine, groups: Any, *args: Any, **kwargs: Any) -> Any:
        t = time.time_ns()
        out = await real_many(self, groups, *args, **kwargs)
        t2 = time.time_ns()
        for _, group in groups:
            for j in group:
                note("send", j.id, t)
                note("written", j.id, t2)
        for result in out:  # a claim folded into the add: sent and back with it
            for claimed in getattr(getattr(result, "claim", None), "jobs", ()):
                note("claim", claimed.id, t)
                note("claimed", claimed.id, t2)
        return out

    Engine.add_jobs_many = add_jobs_many  # type: ignore[method-assign]

    real_claim = Engine.claim

    async def claim(self: Engine, queue: str, *args: Any, **kwargs: Any) -> Any:
        t = time.time_ns()
        res = await real_claim(self, queue, *args, **kwargs)
        t2 = time.time_ns()
        for j in res.jobs:
            note("claim", j.id, t)
            note("claimed", j.id, t2)
        if not res.jobs:
            note("empty", queue, t)
        return res

    Engine.claim = claim  # type: ignore[method-assign]

    real_dispatch = notifier.Notifier._dispatch

    def dispatch(self: Any, parts: list[bytes]) -> None:
        if parts and parts[0] == b"w" and len(parts) > 1:
            note("sub", parts[1].decode())
        real_dispatch(self, parts)

    notifier.Notifier._dispatch = dispatch  # type: ignore[method-assign]

    real_connect = workers.WorkerService.Connect

    async def connect(self: Any, requests: Any, context: Any) -> AsyncIterator[Any]:
        async for message in real_connect(self, requests, context):
            if message.WhichOneof("kind") == "delivery":
                t = time.time_ns()
                for leased in message.delivery.jobs:
                    note("yield", leased.job.id, t)
            yield message

    workers.WorkerService.Connect = connect  # type: ignore[method-assign]


def _patch_worker() -> None:
    from queue_manager import worker

    real_on_delivery = worker.Worker._on_delivery

    def on_delivery(self: Any, delivery: Any) -> None:
        t = time.time_ns()
        for leased in delivery.jobs:
            note("recv", leased.job.id, t)
        real_on_delivery(self, delivery)

    worker.Worker._on_delivery = on_delivery  # type: ignore[method-assign]


def _patch_recorder() -> None:
    from bench import recorder

    real_latency = recorder.Recorder.latency

    def latency(self: Any, job_id: str, started_ns: int, stamp_ns: int, warm: bool) -> None:
        note("stamp", job_id, stamp_ns)
        note("start", job_id, started_ns)
        real_latency(self, job_id, started_ns, stamp_ns, warm)

    recorder.Recorder.latency = latency  # type: ignore[method-assign]


def _stamp(request: Any) -> str:
    """The producer's stamp carried in an AddJobRequest's JSON data (``t``), or ""."""
    raw = request.job.data.raw
    key = b'"t": "' if b'"t": "' in raw else b'"t":"'
    start = raw.find(key)
    if start < 0:
        return ""
    start += len(key)
    return raw[start : raw.index(b'"', start)].decode()


def _patch_client() -> None:
    from queue_manager import adds

    real_send = adds._AddStream.send

    async def send(self: Any, requests: Any) -> Any:
        t = time.time_ns()
        for request in requests:
            note("clsend", _stamp(request), t)
        outcomes = await real_send(self, requests)
        t = time.time_ns()
        for outcome in outcomes:
            if outcome.HasField("created"):  # a brief answer
                note("clrecv", outcome.created.id, t)
            elif outcome.HasField("added"):
                note("clrecv", outcome.added.job.id, t)
        return outcomes

    adds._AddStream.send = send  # type: ignore[method-assign]


_PATCHES: dict[str, Callable[[], None]] = {
    "queue_manager.adds": _patch_client,
    "queue_manager_server.services.workers": _patch_server,
    "queue_manager.worker": _patch_worker,
    "bench.recorder": _patch_recorder,
}


class _AfterImport(importlib.abc.MetaPathFinder):
    """Patches a module right after its first import (the server and worker import them at start)."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in _PATCHES:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        real_exec = loader.exec_module  # type: ignore[attr-defined]

        def exec_module(module: Any) -> None:
            real_exec(module)
            _PATCHES.pop(name)()

        loader.exec_module = exec_module  # type: ignore[attr-defined]
        return spec


def install(directory: str) -> None:
    global _path
    Path(directory).mkdir(parents=True, exist_ok=True)
    _path = Path(directory) / f"{os.getpid()}.hops"
    sys.meta_path.insert(0, _AfterImport())
    threading.Thread(target=_flusher, name="bench-hops", daemon=True).start()
    atexit.register(_flush)
