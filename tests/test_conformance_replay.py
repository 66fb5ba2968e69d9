"""Recorded worker streams and their replay (conformance/recording.py, record.py, replay.py): the sessions
in conformance/recordings/ (recorded from the Python worker by the kit) replay against the Python,
TypeScript, Go and Java workers with no server and no Redis; a worker that does something else fails at the
line where it differs; the recording proxy records a live session that then replays."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from conformance import replay as replay_module
from conformance import transcript
from conformance.proxy import StreamRecord
from conformance.recording import RecordingError, load, save
from conformance.replay import replay
from queue_manager import QueueManager
from queue_manager.v1 import types_pb2
from queue_manager.v1 import worker_service_pb2 as pb
from tests.conftest import ServerFactory
from tests.test_client_ts import ts_built  # noqa: F401 (the fixture: compiles the client and its worker)
from tests.test_conformance import JAVA_BUILD_S, build_go_worker, java_worker_command

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS = sorted((ROOT / "conformance" / "recordings").glob("*.jsonl"))
PYTHON_WORKER = f"{sys.executable} {ROOT / 'conformance/workers/worker.py'}"

# A worker on the kit's contract that fails every job, and one that never finishes one.
BROKEN_WORKER = """
import asyncio, os, signal
from queue_manager import QueueManager

async def main():
    qm = QueueManager(os.environ["QM_CONFORMANCE_ADDRESS"], concurrency=2, shutdown_grace=1.0)

    @qm.processor(os.environ["QM_CONFORMANCE_QUEUE"])
    async def process(job):
        if os.environ["MODE"] == "fail":
            raise RuntimeError("this worker fails every job")
        await asyncio.Event().wait()

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await qm.start_workers()
    await stop.wait()
    await qm.shutdown()

asyncio.run(main())
"""

# A worker on the raw protocol that ends each pair of jobs the Go worker's way under load: the first pair in
# one report, every later pair in two reports 50 ms apart, so the second completion is still on its way when
# the server answers the first.
SPLIT_PAIRS_WORKER = """
import asyncio, os, signal
import grpc
from queue_manager.v1 import worker_service_pb2 as pb
from queue_manager.v1 import worker_service_pb2_grpc as rpc

def report(**fields):
    return pb.ConnectRequest(report=pb.WorkerReport(**fields))

async def main():
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    queue = os.environ["QM_CONFORMANCE_QUEUE"]
    async with grpc.aio.insecure_channel(os.environ["QM_CONFORMANCE_ADDRESS"]) as channel:
        call = rpc.WorkerServiceStub(channel).Connect()
        hello = pb.WorkerHello(worker_id="w", queues=[queue], concurrency=2)
        await call.write(pb.ConnectRequest(hello=hello))
        await call.read()
        await call.write(report(credits=2))
        held = []
        for pair in range(3):
            while len(held) < 2:
                held += [(j.job.id, j.lease_token) for j in (await call.read()).delivery.jobs]
            done = [pb.JobCompletion(queue_name=queue, job_id=i, lease_token=t) for i, t in held]
            held = []
            if pair == 0:
                await call.write(report(credits=2, completions=done))
                continue
            await asyncio.sleep(0.3)  # the pair runs (the recording's jobs sleep 300 ms)
            await call.write(report(credits=1, completions=done[:1]))
            await asyncio.sleep(0.05)
            await call.write(report(credits=1, completions=done[1:]))
        await stop.wait()
        await call.write(report(stop=True))
        await call.read()
        await call.done_writing()
        await call.read()

asyncio.run(main())
"""


def test_there_are_recordings_of_every_single_stream_scenario() -> None:
    assert {p.stem for p in RECORDINGS} == {
        "hello_and_credits",
        "completion",
        "failure",
        "retry_backoff",
        "progress",
        "checkpoint",
        "lease_fencing",
        "cancel",
    }


@pytest.mark.parametrize("recording", RECORDINGS, ids=lambda p: p.stem)
async def test_each_recording_replays_against_the_python_worker(recording: Path) -> None:
    assert await replay([recording], PYTHON_WORKER) == ""


async def test_the_recordings_replay_against_the_typescript_worker(ts_built: Path) -> None:  # noqa: F811
    worker = f"node {ROOT / 'clients/ts/dist/conformance/worker.js'}"
    for recording in RECORDINGS:
        assert await replay([recording], worker) == "", recording.stem


@pytest.fixture(scope="module")
async def go_worker(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(await build_go_worker(tmp_path_factory.mktemp("go")))


@pytest.mark.timeout(300)
async def test_the_recordings_replay_against_the_go_worker(go_worker: str) -> None:
    for recording in RECORDINGS:
        assert await replay([recording], go_worker) == "", recording.stem


@pytest.mark.timeout(300 + 2 * JAVA_BUILD_S)
async def test_the_recordings_replay_against_the_java_worker(tmp_path: Path) -> None:
    worker = await java_worker_command(tmp_path)
    for recording in RECORDINGS:
        assert await replay([recording], worker) == "", recording.stem


async def test_a_completion_that_comes_while_the_server_answers_the_one_before_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race met with the Go worker under load, on demand: each write of a delivery takes a while (as on a
    loaded machine), and the second completion of a pair comes meanwhile. The replay sends each recorded
    delivery once the worker has sent the completions the recording had before it, not on a count of
    folded lines, so it sends none after the worker's last completion and SIGTERM, and the stream keeps the
    recording's shape."""

    class SlowWrites(replay_module._Servicer):
        async def Connect(
            self, request_iterator: AsyncIterator[pb.ConnectRequest], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[pb.ConnectResponse]:
            async for response in self.replay.connect(request_iterator, context):
                yield response
                if response.WhichOneof("kind") == "delivery":
                    # The injected fault: a write slower than the worker's 50 ms between two completions.
                    await asyncio.sleep(0.2)

    monkeypatch.setattr(replay_module, "_Servicer", SlowWrites)
    script = tmp_path / "split_pairs.py"
    script.write_text(SPLIT_PAIRS_WORKER)
    recording = ROOT / "conformance/recordings/hello_and_credits.jsonl"
    assert await replay([recording], f"{sys.executable} {script}") == ""


async def test_a_worker_that_fails_the_job_is_stopped_at_the_line_that_differs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "broken.py"
    script.write_text(BROKEN_WORKER)
    monkeypatch.setenv("MODE", "fail")
    why = await replay([ROOT / "conformance/recordings/completion.jsonl"], f"{sys.executable} {script}")
    assert "the recording has '> completion echo', the worker sent '> failure echo'" in why, why


async def test_a_worker_that_never_answers_fails_after_the_timeout_naming_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "stuck.py"
    script.write_text(BROKEN_WORKER)
    monkeypatch.setenv("MODE", "stuck")
    why = await replay(
        [ROOT / "conformance/recordings/completion.jsonl"], f"{sys.executable} {script}", timeout_s=2.0
    )
    assert "waited 2 s for the worker to send '> completion echo'" in why, why


def test_a_stream_saved_and_loaded_keeps_every_message_and_end(tmp_path: Path) -> None:
    record = StreamRecord(3)
    record.add(">", pb.ConnectRequest(hello=pb.WorkerHello(worker_id="w", queues=["q"], concurrency=2)))
    job = types_pb2.Job(id="j1", name="echo")
    record.add(
        "<", pb.ConnectResponse(delivery=pb.JobDelivery(jobs=[pb.LeasedJob(job=job, lease_token="t")]))
    )
    record.add(">", end="half-close")
    record.add("<", end="UNAVAILABLE")
    loaded = load(save(record, tmp_path / "s.jsonl"))
    assert loaded.number == 3
    assert [(m.direction, m.body, m.end) for m in loaded.messages] == [
        (m.direction, m.body, m.end) for m in record.messages
    ]
    assert transcript.lines(loaded) == ["> hello", "< delivery echo", "> end half-close", "< end UNAVAILABLE"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a recorded worker stream"),
        ('{"format": "other"}\n', "not a recorded worker stream"),
        ('{"format": "qm-worker-stream", "version": 9}\n', "version 9"),
        ('{"format": "qm-worker-stream", "version": 1}\n{"t": 0, "dir": "?"}\n', "line 2"),
        (
            '{"format": "qm-worker-stream", "version": 1}\n{"t": 0, "dir": ">", "msg": {"nope": 1}}\n',
            "line 2",
        ),
    ],
)
def test_a_file_that_is_not_a_recording_is_refused_saying_where(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(RecordingError, match=message):
        load(path)


async def test_the_recording_proxy_records_a_live_session_that_then_replays(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = await server_factory()
    out = tmp_path / "streams"
    recorder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "conformance.record",
        "--upstream",
        server.address,
        "--out",
        str(out),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert recorder.stdout is not None
        address = (await asyncio.wait_for(recorder.stdout.readline(), 30)).decode().strip()
        assert address.startswith("127.0.0.1:"), address
        # The kit's Python worker through the proxy, one echo job, then SIGTERM.
        qm = QueueManager(server.address)
        await qm.register_queue("live")
        worker = await asyncio.create_subprocess_exec(
            *PYTHON_WORKER.split(),
            env={**os.environ, "QM_CONFORMANCE_ADDRESS": address, "QM_CONFORMANCE_QUEUE": "live"},
        )
        job = await qm.add_job("live", "echo", {"n": 1})
        done = await qm.wait_for_job("live", job.id, timeout=30)
        assert done.result == {"n": 1}
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), 30) == 0
        await qm.shutdown()
        path = out / "stream-1.jsonl"
        # The proxy writes the stream as it ends, just after the worker's exit, and says so on stderr.
        assert recorder.stderr is not None
        async with asyncio.timeout(30):
            async for line in recorder.stderr:
                if line.startswith(b"recorded "):
                    assert str(path).encode() in line, line
                    break
    finally:
        recorder.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(recorder.wait(), 30) == 0
    header = json.loads(path.read_text().splitlines()[0])
    assert header == {"format": "qm-worker-stream", "version": 1, "stream": 1}
    assert transcript.shape(load(path))[:5] == [
        "> hello",
        "< welcome",
        "> credits",
        "< delivery echo",
        "> completion echo",
    ]
    assert await replay([path], PYTHON_WORKER) == ""
