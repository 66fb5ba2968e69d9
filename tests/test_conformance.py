"""The worker-protocol conformance kit (conformance/) against the four workers this repository ships:
Python (conformance/workers/worker.py), TypeScript (clients/ts/conformance/worker.ts), Go
(clients/go/cmd/conformance-worker) and Java (conformance/workers/ConformanceWorker.java). Each run is
`python -m conformance --worker …`, which must pass every scenario; its output is shown otherwise. The kit's
transcript rules are checked on recorded streams too."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest

from conformance import transcript
from conformance.proxy import Proxy, StreamRecord
from conformance.replay import script
from conformance.scenarios import SCENARIOS, _peak_in_flight
from queue_manager import QueueManager
from queue_manager.v1 import types_pb2
from queue_manager.v1 import worker_service_pb2 as pb
from tests.conftest import ServerFactory
from tests.test_client_ts import ts_built  # noqa: F401 (the fixture: compiles the client and its worker)

ROOT = Path(__file__).resolve().parent.parent
# A whole kit run: about 15 s for each worker.
KIT_TIMEOUT_S = 100
# A build of the Java client (stubs generated and everything compiled: about 40 s of CPU) or of its worker.
JAVA_BUILD_S = 300


async def run_kit(worker: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "conformance",
        "--worker",
        worker,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), KIT_TIMEOUT_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"the kit failed the worker {worker!r}:\n{text}"
    assert f"{len(SCENARIOS)} passed, 0 failed" in text, text
    return text


async def test_python_worker_conforms() -> None:
    await run_kit(f"{sys.executable} conformance/workers/worker.py")


async def test_typescript_worker_conforms(ts_built: Path) -> None:  # noqa: F811
    await run_kit(f"node {ROOT / 'clients/ts/dist/conformance/worker.js'}")


async def build_go_worker(directory: Path) -> Path:
    """Builds the Go conformance worker (clients/go/cmd/conformance-worker) into `directory`."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("go is not installed: the Go client (clients/go) needs Go 1.26 or newer (its go.mod)")
    binary = directory / "conformance-worker"
    build = await asyncio.create_subprocess_exec(
        go,
        "build",
        "-o",
        str(binary),
        "./cmd/conformance-worker",
        cwd=ROOT / "clients" / "go",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    built, _ = await asyncio.wait_for(build.communicate(), 150)
    assert build.returncode == 0, built.decode(errors="replace")
    return binary


@pytest.mark.timeout(KIT_TIMEOUT_S + 150)
async def test_go_worker_conforms(tmp_path: Path) -> None:
    await run_kit(str(await build_go_worker(tmp_path)))


def _java_build_fresh(target: Path) -> bool:
    """Whether `make java-dev`'s build in `target` is newer than everything it was built from (the client's
    sources, its pom and the proto files); `make test` runs java-dev first, so there it is."""
    stamp = target / "classpath.txt"
    if not (stamp.exists() and (target / "classes").is_dir()):
        return False
    java_dir = ROOT / "clients" / "java"
    sources = [
        java_dir / "pom.xml",
        *(java_dir / "src" / "main").rglob("*"),
        *(ROOT / "proto").rglob("*.proto"),
    ]
    built = stamp.stat().st_mtime
    return all(p.stat().st_mtime <= built for p in sources if p.is_file())


async def java_worker_command(build_dir: Path) -> str:
    """Compiles the Java conformance worker into `build_dir` on the Java client (clients/java), and returns
    the command that runs it. The client is `make java-dev`'s build when it is fresh, else built offline into
    `build_dir` (`make java-dev` fetched what that needs)."""
    mvn = shutil.which("mvn")
    if mvn is None:
        pytest.fail("mvn is not installed: the Java client (clients/java) needs Maven and Java 17")
    target = ROOT / "clients" / "java" / "target"
    if not _java_build_fresh(target):
        # A build directory of its own (the pom's qm.build.directory), never clients/java/target: a Maven
        # build generates the stubs and compiles everything again, and two at once in one directory (this
        # test's and the replay test's, on two xdist workers) rewrite classes while JVMs load them.
        target = build_dir / "maven"
        build = await asyncio.create_subprocess_exec(
            mvn,
            "-q",
            "-B",
            "-o",
            "compile",
            "dependency:build-classpath",
            f"-Dqm.build.directory={target}",
            f"-Dmdep.outputFile={target / 'classpath.txt'}",
            "-Dmdep.includeScope=runtime",
            cwd=ROOT / "clients" / "java",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        built, _ = await asyncio.wait_for(build.communicate(), JAVA_BUILD_S)
        assert build.returncode == 0, built.decode(errors="replace")
    classpath = f"{target / 'classes'}:{(target / 'classpath.txt').read_text().strip()}"
    # Compiled once here, not launched from its source file: a source launch compiles it again in every JVM
    # the kit starts (about a second of CPU each). The JVM flags trade peak speed for a quick start (C1
    # only, the serial collector), which is what a worker process that lives a few seconds wants.
    javac = await asyncio.create_subprocess_exec(
        "javac",
        "-nowarn",
        "-cp",
        classpath,
        "-d",
        str(build_dir / "worker"),
        str(ROOT / "conformance" / "workers" / "ConformanceWorker.java"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    compiled, _ = await asyncio.wait_for(javac.communicate(), JAVA_BUILD_S)
    assert javac.returncode == 0, compiled.decode(errors="replace")
    flags = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
    return f"java {flags} -cp {build_dir / 'worker'}:{classpath} ConformanceWorker"


@pytest.mark.timeout(KIT_TIMEOUT_S + 2 * JAVA_BUILD_S)
async def test_java_worker_conforms(tmp_path: Path) -> None:
    await run_kit(await java_worker_command(tmp_path))


def _stream(*messages: tuple[str, object]) -> StreamRecord:
    record = StreamRecord(1)
    for direction, body in messages:
        record.add(direction, body)
    return record


def _delivery(*ids: str) -> pb.ConnectResponse:
    jobs = [pb.LeasedJob(job=types_pb2.Job(id=i, name="sleep"), lease_token="t") for i in ids]
    return pb.ConnectResponse(delivery=pb.JobDelivery(jobs=jobs))


def _done(*ids: str, credits: int = 0) -> pb.ConnectRequest:
    completions = [pb.JobCompletion(job_id=i, lease_token="t") for i in ids]
    return pb.ConnectRequest(report=pb.WorkerReport(credits=credits, completions=completions))


def test_jobs_in_flight_count_deliveries_less_outcomes() -> None:
    record = _stream(("<", _delivery("a", "b")), (">", _done("a")), ("<", _delivery("c", "d")))
    assert _peak_in_flight(record) == 3  # b, c and d: one more than a concurrency of 2 allows


def test_a_parked_run_is_out_of_flight_and_shows_in_the_shape() -> None:
    parked = pb.ConnectRequest(report=pb.WorkerReport(parked=[pb.LeaseRef(job_id="a", lease_token="t")]))
    record = _stream(("<", _delivery("a", "b")), (">", parked), ("<", _delivery("c")))
    assert _peak_in_flight(record) == 2  # b and c: a's own call ended its run
    assert transcript.shape(record) == ["< delivery sleep", "> parked sleep", "< delivery sleep"]
    # A replay asks for a signalled stop once the worker holds what the recording's did; a parked run is
    # not held.
    record.add(">", pb.ConnectRequest(report=pb.WorkerReport(stop=True)))
    assert [stop.held for stop in script(record).signalled.values()] == [2]


def test_a_shape_leaves_out_heartbeats_and_later_credits_and_folds_repeats() -> None:
    lease = pb.LeaseRef(job_id="a", lease_token="t")
    heartbeat = pb.ConnectRequest(report=pb.WorkerReport(extensions=[lease]))
    record = _stream(
        (">", pb.ConnectRequest(hello=pb.WorkerHello(worker_id="w", queues=["q"], concurrency=2))),
        ("<", pb.ConnectResponse(welcome=pb.ServerWelcome(server_id="s"))),
        (">", pb.ConnectRequest(report=pb.WorkerReport(credits=2))),
        ("<", _delivery("a")),
        ("<", _delivery("b")),
        (">", heartbeat),
        (">", _done("a", credits=1)),
        (">", _done("b", credits=1)),
    )
    assert transcript.shape(record) == [
        "> hello",
        "< welcome",
        "> credits",
        "< delivery sleep",
        "> completion sleep",
    ]
    assert "> extension sleep" in transcript.lines(record)


def test_the_golden_transcripts_start_with_hello_and_welcome() -> None:
    for name in ("echo", "cancel", "drain"):
        assert transcript.golden(name)[:3] == ["> hello", "< welcome", "> credits"], name


@pytest.mark.parametrize("value", ["0", "-3", "100001", "two"])
async def test_the_kit_refuses_a_bad_concurrency_before_running_anything(value: str) -> None:
    """A --concurrency no worker can take is a usage error naming the flag and its range (before: every
    scenario ran and failed)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "conformance",
        "--worker",
        "true",
        "--concurrency",
        value,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2, (out, err)
    assert b"argument --concurrency: must be a whole number from 1 to 100,000" in err, err
    assert b"passed" not in out, out


async def test_the_kits_proxy_passes_headers_before_any_message(server_factory: ServerFactory) -> None:
    """A call the proxy forwards gets the server's headers at once: the Python producer stream (add_job) waits
    for them before it writes, and hung when the proxy held them back for a first response that never came."""
    server = await server_factory()
    proxy = Proxy(server.address)
    await proxy.start()
    qm = QueueManager(proxy.address)
    try:
        async with asyncio.timeout(20):
            await qm.register_queue("proxied")
            job = await qm.add_job("proxied", "through-the-proxy")
            assert (await qm.get_job("proxied", job.id)).name == "through-the-proxy"
    finally:
        await qm.shutdown()
        await proxy.stop()


def test_a_shape_shows_the_welcome_after_the_hello_when_credits_came_with_the_hello() -> None:
    """A worker may grant its first credits with its hello, before the welcome comes back (the server reads
    them in order): its stream has the golden shape (before: the shape showed `> credits` before
    `< welcome` and every golden scenario failed)."""
    hello = pb.ConnectRequest(hello=pb.WorkerHello(worker_id="w", queues=["q"], concurrency=2))
    record = _stream(
        (">", hello),
        (">", pb.ConnectRequest(report=pb.WorkerReport(credits=2))),
        ("<", pb.ConnectResponse(welcome=pb.ServerWelcome(server_id="s"))),
        ("<", _delivery("a")),
    )
    assert transcript.shape(record) == ["> hello", "< welcome", "> credits", "< delivery sleep"]


FAULTY_WORKER = f"{sys.executable} {ROOT / 'tests' / 'conformance_faulty_worker.py'}"


async def run_faulty(
    monkeypatch: pytest.MonkeyPatch, fault: str, *only: str, wait_s: float = 10.0
) -> dict[str, str]:
    """Runs the kit in this process against tests/conformance_faulty_worker.py with QM_FAULT=`fault`, waiting
    at most `wait_s` for anything; returns each scenario's failure ("" when it passed)."""
    from conformance import __main__ as kit_main
    from conformance import harness, scenarios

    monkeypatch.setenv("QM_FAULT", fault)
    monkeypatch.setattr(harness, "WAIT_S", wait_s)
    monkeypatch.setattr(scenarios, "WAIT_S", wait_s)
    return dict(await kit_main.run(FAULTY_WORKER, list(only), record=False, concurrency=2))


@pytest.mark.timeout(60)
async def test_a_worker_sending_credits_with_its_hello_conforms(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the golden scenarios failed on the order of `> credits` and `< welcome`, and
    drain_and_reconnect said the worker never came back, though it had."""
    verdicts = await run_faulty(monkeypatch, "", "completion", "drain_and_reconnect")
    assert verdicts == {"completion": "", "drain_and_reconnect": ""}, verdicts


async def test_a_worker_that_exits_at_start_is_failed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the kit waited its whole bound (20 s) for a stream, then said only that none came."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    why = (await run_faulty(monkeypatch, "exit_at_start", "completion", wait_s=20.0))["completion"]
    assert why.startswith("the worker exited with 3 at start"), why
    assert "cannot start: no configuration" in why and why.count("the worker's output") == 1, why
    assert loop.time() - started < 10, "the exit was not noticed before the wait ran out"


async def test_a_worker_refused_by_the_server_is_told_the_status(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a stream the server ended (no hello) was waited for as if it might still be welcomed."""
    why = (await run_faulty(monkeypatch, "no_hello", "completion", wait_s=20.0))["completion"]
    assert why.startswith(
        "the server ended the worker's stream before welcoming it, INVALID_ARGUMENT: hello: the first "
        "message on the worker stream must be a hello; the worker sent: > credits 2"
    ), why


async def test_a_worker_ignoring_cancel_fails_the_scenario_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: the wait's TimeoutError ended the kit's whole run with a traceback."""
    why = (await run_faulty(monkeypatch, "ignore_cancel", "cancel", wait_s=1.5))["cancel"]
    assert "is still active after a wait of 1.5 s" in why, why
    assert "CANCEL_JOB for its run; the worker must stop the run and report it in report.cancelled" in why


async def test_a_worker_without_heartbeats_is_told_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the job failed for good on its stalls and the kit showed only that."""
    why = (await run_faulty(monkeypatch, "no_heartbeat", "lease_fencing"))["lease_fencing"]
    assert why.startswith("the worker sent no heartbeat for a run of 2000 ms with a lease of 1000 ms"), why


async def test_a_missing_checkpoint_or_progress_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    verdicts = await run_faulty(monkeypatch, "no_checkpoint", "checkpoint")
    assert "not the checkpoint {'step': 1}: the run must save it with UpdateJobData" in verdicts["checkpoint"]
    verdicts = await run_faulty(monkeypatch, "no_progress", "progress")
    assert "with progress None, not 100: report each step" in verdicts["progress"], verdicts
