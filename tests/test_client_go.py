"""The Go client (clients/go): its `go test` suite against real servers started here (plain, one that
requires a token, one that requires mutual TLS), its worker through a server stop (DRAIN) and restart
on the same address, and its traced worker continuing a trace that the Python client started."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import uuid
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from queue_manager import EncodedPayload, JobContext, JobState, QueueManager, codecs_from_env
from queue_manager_server.embedded import free_port
from tests.conftest import RunningServer, ServerFactory, stop_server_timeouts, time_out_on_claim
from tests.procs import run_to_end
from tests.security_kit import make_pki, token_file
from tests.split_proxy import SplitProxy

GO_DIR = Path(__file__).resolve().parent.parent / "clients" / "go"
GO = shutil.which("go")


@pytest.fixture(autouse=True)
def go_installed() -> None:
    """The Go client is part of the product: without Go its tests fail rather than skip."""
    if GO is None:
        pytest.fail(
            "go is not installed: the Go client (clients/go) needs Go 1.26 or newer (clients/go/go.mod)"
        )


# Every test of the suite, each of which must pass (none skipped): a test renamed or lost fails here.
EXPECTED = {
    "TestBadHandlerQueueNameIsRefusedBeforeConnecting",
    "TestAddBulkOverOneMessageLimit",
    "TestPullWorkerFetchesCompletesAndFails",
    "TestPullLongPollAnswersAJobAddedWhileItWaits",
    "TestTracingPulledRunIsAChildOfItsAdd",
    "TestTracingPulledRunFailsWithErrorStatus",
    "TestCodecGoldenVectorsDecodeAndBadOnesAreRefusedNamingTheKey",
    "TestDecodeKeyRefusesTextThatIsNotBase64SayingWhatAKeyIs",
    "TestCodecSealsWithAFreshNonceAndRefusesAFlippedByte",
    "TestCodecCompressesFromItsThresholdWhenThatSavesBytes",
    "TestCodecSettingsAreCheckedWithWhatToFix",
    "TestCodecsStoreDataAndResultsEncodedAndReadThemDecoded",
    "TestCodecsReadOldPayloadsAfterAKeyRotation",
    "TestCodecsWorkerFailsAJobItCannotDecodeForGood",
    "TestCodecsRefuseResultConditions",
    "TestCodecsDecodeADeadLetterCopy",
    "TestCodecsDecodeEveryReadOfADeadLetterCopy",
    "TestCodecDecodesACopyAsAJSONValueAndAsLuaRewroteIt",
    "TestTimedPauseShowsItsTimeAndAResumeClearsIt",
    "TestTimedPauseRefusesBadTimes",
    "TestMaintenanceWindowsReadBackAndHoldTheQueue",
    "TestGroupMaintenanceWindowHoldsTheGroupAndShowsInListGroups",
    "TestGroupInfoListsItsMaintenanceWindowsAndStaysComparable",
    "TestRefusedTLSHandshakesSayWhatToChange",
    "TestMetricsShowATimedPauseAndAMaintenanceWindow",
    "TestFromRPCMapsEachCode",
    "TestAdvanceTestClockRunsADelayedJobWithoutWaiting",
    "TestAdvanceTestClockIsRefusedOnRealTime",
    "TestDelayedSleepsBetweenStepsWithItsCheckpoint",
    "TestBatchHandsJobsToOneCallEachKeepingItsOutcome",
    "TestAddJobStoresOptionsAndIsIdempotent",
    "TestWorkerLabelsRouteTheJobToAMatchingWorker",
    "TestWaitForChildrenParksTheJobAndSumsTheirResults",
    "TestWaitForChildrenRefusalGoesBackToTheHandler",
    "TestWaitForChildrenWaitsForAnExistingJobByItsID",
    "TestWaitForChildrenSeesAChildRemovedBeforeItFinished",
    "TestWaitForEventParksTheJobUntilPushEvent",
    "TestWaitForEventTimesOutAndBadKeysAreRefused",
    "TestEventTriggersAddAJobForAMatchingPush",
    "TestErrorsMapToTypedErrors",
    "TestQueueAdmin",
    "TestUpdateJobDataChangesAnUnfinishedJob",
    "TestTokenIsSentOnEveryCall",
    "TestNewRefusesABadAddressOrToken",
    "TestWorkerCompletesWithResultProgressAndLogs",
    "TestFailuresAreRetriedThenFail",
    "TestPrioritiesOrderTheRuns",
    "TestDelayedJobRunsAfterItsDelay",
    "TestBulkJobsRunExactlyOnce",
    "TestCancelStopsTheRunningHandler",
    "TestJobTimeoutEndsTheRun",
    "TestServerTimeoutEndsTheRunAsTheWorkersOwn",
    "TestShutdownLetsRunningJobsFinish",
    "TestShutdownAbandonsRunsPastItsContext",
    "TestKilledWorkersJobIsRecovered",
    "TestWorkerReconnectsWhenTheConnectionBreaks",
    "TestHeartbeatsKeepALongRunLeased",
    "TestRejectedExtensionStopsTheRun",
    "TestRateLimitedWaitsWithoutUsingAnAttempt",
    "TestRunEndsWhenItsClientIsClosed",
    "TestWorkflowRunsItsStepsInOrder",
    "TestListWorkersShowsConnectedWorkers",
    "TestWatchMetricsStreamsSnapshots",
    "TestSchedulesUpsertGetListDelete",
    "TestMutualTLS",
    "TestAddJobBatchKeepsEachOutcome",
    "TestDedupReplaceGivesThePendingJobTheLastData",
    "TestGetJobLogsPagesThroughTheLog",
    "TestRetryFailedJobsRunsThemAgain",
    "TestJobNotStartedInTimeExpires",
    "TestPayloadValueReadsAsThePythonClient",
    "TestGetAllMetricsCoversEveryQueue",
    "TestListWorkflowsPagesNewestFirst",
    "TestRunIfSkipsAStepWhoseConditionFails",
    "TestPriorityBoundsAreStoredAndReadBack",
    "TestBadPriorityBoundsAreRefusedBeforeTheCall",
    "TestMetricsReportEachPriorityLevel",
    "TestTracingRunIsAChildOfItsAdd",
    "TestTracingBulkJobsRunUnderTheBatchSpan",
    "TestTracingFailedRunHasErrorStatusAndTheException",
    "TestTracingKeepsACallersTraceparent",
    "TestTracingWorkflowIsOneTrace",
    "TestTracingOffAddsNothing",
    "TestTracingIsOffWithoutAProvider",
    "TestGroupsTakeTurns",
    "TestGroupConcurrencyLimitHoldsAGroupsRuns",
    "TestListGroupsAndSetGroupLimitsRoundTrip",
    "TestBadGroupsAreRefusedWithTheField",
    "TestAPausedGroupWaitsUntilResumed",
    "TestLIFOJobsGoToTheHeadOfTheirLevel",
    "TestAFullQueueRefusesAddsWithResourceExhausted",
    "TestAGroupsMaxSizeRefusesItsAddsOnly",
    "TestUpdateDataSavesACheckpointForTheNextAttempt",
    "TestUpdateDataOfALostRunIsRefused",
    "TestRescheduleJobMovesARunTime",
    "TestRetryWorkflowResumesAFailedRun",
    "TestListJobsMatchingFilters",
    "TestBulkActionsActOnWhatMatches",
    "TestBadFiltersAreRefusedBeforeTheCall",
    "TestRetryJobsIsBoundedWithoutAFilter",
    "TestWatchJobEventsFollowsEachJob",
    "TestWatchJobEventsFiltersAndEnds",
    "TestRedriveAndRetryWithDataRunFailedJobsAgain",
    "TestListDeadLettersReadsEachCopy",
    "TestRedriveWithDataRunsTheOriginalWithItInOneCall",
    "TestWorkerObeysQuietResumeAndStop",
    "TestSetWorkerConcurrencyRaisesAndLowersTheRuns",
    "TestWorkerControlRefusesBadArguments",
    "TestQueueOrderTakesAQueueOnlyWhileNoneBeforeItHasJobs",
    "TestQueueWeightsShareTheSlots",
    "TestBadQueueSharesAreRefusedBeforeConnecting",
    "TestTierPrefersTheLowerTierUntilItIsFull",
    "TestCountJobsFollowsTheTokens",
    "TestWorkerTimeoutIsRecordedAsTimedOut",
    "TestAHeartbeatCrossingTheCallThatParksTheRunIsNoWarning",
    "TestParkedRunsThroughAnotherServerFreeTheirLeases",
}
# Run by the other test of this file, or only as a child process of the suite.
SKIPPED_HERE = {
    "TestDrainFinishesRunsAndReconnects",
    "TestHelperWorker",
    "TestTracedWorkerContinuesAPythonTrace",
    "TestTracedAddForAPythonWorker",
    "TestCodecsWorkerRunsAPythonJob",
    "TestCodecsAddForAPythonWorker",
}

# The plain server's lease: short, so that a run outlives several leases in little time (heartbeats every
# third of it).
LEASE_MS = 900

# The drained server's grace: long, so that a worker holding its stream past DRAIN shows as a slow stop.
DRAIN_GRACE_MS = 20_000

# The first run compiles the client and gRPC when `make dev` has not (it builds them ahead: make go-dev).
GO_TIMEOUT_S = 240


def _go_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QM_TOKEN", "QM_TLS"))}
    env.update(extra)
    return env


def _results(output: str) -> dict[str, str]:
    return dict((name, verdict) for verdict, name in re.findall(r"--- (PASS|FAIL|SKIP): (\w+)", output))


@pytest.mark.timeout(GO_TIMEOUT_S + 30)
async def test_go_client_suite(server_factory: ServerFactory, tmp_path: Path) -> None:
    tokens = token_file(tmp_path / "tokens.toml", {"admin": ("admin", ["*"])})
    server = await server_factory(lease_ms=LEASE_MS)
    secured = await server_factory(auth_file=str(tmp_path / "tokens.toml"))
    pki = make_pki(tmp_path / "pki")
    mutual = await server_factory(
        tls_cert=str(pki.server_cert), tls_key=str(pki.server_key), tls_client_ca=str(pki.ca)
    )
    # A server alone on its key prefix that leaves job timeouts to the workers (the worker-timeout test).
    lax = await server_factory(key_prefix=f"t{uuid.uuid4().hex[:10]}")
    await stop_server_timeouts(lax)
    # One alone on its key prefix that times each run out as soon as it leases it (the server-timeout test).
    hasty = await server_factory(key_prefix=f"h{uuid.uuid4().hex[:10]}")
    time_out_on_claim(hasty)
    # One on the test clock, alone on its key prefix (the test-clock tests).
    clock = await server_factory(test_clock=True, key_prefix=f"c{uuid.uuid4().hex[:10]}")
    # Worker streams on a server bounding a worker's credits, every other call on `server` (the parked-runs
    # test: its WaitForEvent and WaitForChildren reach another server than its stream).
    streams = await server_factory(max_worker_credits=4)
    split = SplitProxy(streams=streams.address, calls=server.address)
    env = _go_env(
        QM_TEST_SPLIT_ADDRESS=await split.start(),
        QM_TEST_CLOCK_ADDRESS=clock.address,
        QM_TEST_ADDRESS=server.address,
        QM_TEST_NO_TIMEOUTS_ADDRESS=lax.address,
        QM_TEST_SERVER_TIMEOUTS_ADDRESS=hasty.address,
        QM_TEST_LEASE_MS=str(LEASE_MS),
        QM_TEST_AUTH_ADDRESS=secured.address,
        QM_TEST_TOKEN=tokens["admin"],
        QM_TEST_TLS_ADDRESS=mutual.address,
        QM_TEST_TLS_CA=str(pki.ca),
        QM_TEST_TLS_OTHER_CA=str(pki.other_ca),
        QM_TEST_TLS_CERT=str(pki.client_cert),
        QM_TEST_TLS_KEY=str(pki.client_key),
        QM_TEST_TLS_ROGUE_CERT=str(pki.rogue_cert),
        QM_TEST_TLS_ROGUE_KEY=str(pki.rogue_key),
    )
    try:
        returncode, output = await run_to_end(
            [GO or "go", "test", "-count=1", "-v", "./..."], GO_DIR, env, GO_TIMEOUT_S
        )
    finally:
        await split.stop()
    assert returncode == 0, f"go test failed:\n{output}"
    results = _results(output)
    missing = {name for name in EXPECTED if results.get(name) != "PASS"}
    assert not missing, f"not passed: {sorted(missing)}\n{output}"
    unexpected = set(results) - EXPECTED - SKIPPED_HERE
    assert not unexpected, f"tests this file does not know: {sorted(unexpected)} (add them to EXPECTED)"


@pytest.mark.timeout(GO_TIMEOUT_S + 60)
async def test_go_worker_drains_and_reconnects(server_factory: ServerFactory, tmp_path: Path) -> None:
    """The server stops while a Go handler runs: the worker gets DRAIN, finishes the run on that stream,
    half-closes it (the Go test checks that it does so before the server ends the stream, which another
    worker's held job keeps open), and runs new jobs once a server is back on the same address."""
    binary = tmp_path / "queuemanager.test"
    build = await asyncio.create_subprocess_exec(
        GO or "go",
        "test",
        "-c",
        "-o",
        str(binary),
        "./queuemanager",
        cwd=GO_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    built, _ = await asyncio.wait_for(build.communicate(), GO_TIMEOUT_S)
    assert build.returncode == 0, built.decode(errors="replace")

    listen = f"127.0.0.1:{free_port()}"
    server = await server_factory(listen=listen, shutdown_grace_ms=DRAIN_GRACE_MS)
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        "-test.run=^TestDrainFinishesRunsAndReconnects$",
        "-test.v",
        "-test.count=1",
        cwd=GO_DIR / "queuemanager",
        env=_go_env(QM_TEST_DRAIN_ADDRESS=listen),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None and proc.stdin is not None
    lines: list[str] = []
    rest = b""
    try:
        async with asyncio.timeout(60):
            while line := (await proc.stdout.readline()).decode(errors="replace"):
                if "DRAIN-READY" in line:
                    break
                lines.append(line)
            assert line, "the Go test ended before its job ran:\n" + "".join(lines)
            # Stopping sends DRAIN and waits (up to its grace) for the worker to finish its run.
            started = asyncio.get_running_loop().time()
            await server.stop()
            took = asyncio.get_running_loop().time() - started
            assert took < DRAIN_GRACE_MS / 2000, (
                f"the worker held the stream {took:.1f}s after DRAIN"
                " (it must half-close once its runs are done)"
            )
            await server_factory(listen=listen)
            proc.stdin.write(b"RESTARTED\n")
            await proc.stdin.drain()
            rest = await proc.stdout.read()
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output = "".join(lines) + rest.decode(errors="replace")
    assert proc.returncode == 0, f"go test failed:\n{output}"
    assert _results(output).get("TestDrainFinishesRunsAndReconnects") == "PASS", output


def _traced_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def _go_test(name: str, **env: str) -> str:
    """Runs one Go test of the suite with `env` and returns its output, once it has passed."""
    returncode, output = await run_to_end(
        [GO or "go", "test", "-count=1", "-v", f"-run=^{name}$", "./queuemanager"],
        GO_DIR,
        _go_env(**env),
        GO_TIMEOUT_S,
    )
    assert returncode == 0, f"go test failed:\n{output}"
    assert _results(output).get(name) == "PASS", output
    return output


@pytest.mark.timeout(GO_TIMEOUT_S + 30)
async def test_go_worker_continues_a_python_trace(server: RunningServer) -> None:
    """A job that the Python client adds with tracing on is run by a Go worker whose run's span is a child of
    the Python add's span: the W3C context in the job's attributes crosses languages."""
    provider, exporter = _traced_provider()
    queue = "py-to-go-traced"
    async with QueueManager(address=server.address, tracer_provider=provider) as qm:
        await qm.register_queue(queue)
        job = await qm.add_job(queue, "cross", {"from": "python"})
        (publish,) = [s for s in exporter.get_finished_spans() if s.name == f"{queue} publish"]
        assert publish.context is not None
        parent = f"{publish.context.trace_id:032x}-{publish.context.span_id:016x}"
        await _go_test(
            "TestTracedWorkerContinuesAPythonTrace",
            QM_TEST_TRACE_ADDRESS=server.address,
            QM_TEST_TRACE_QUEUE=queue,
            QM_TEST_TRACE_PARENT=parent,
        )
        done = await qm.wait_for_job(queue, job.id, timeout=30)
        assert done.state is JobState.COMPLETED and done.result == "go ran it"
    provider.shutdown()


@pytest.mark.timeout(GO_TIMEOUT_S + 30)
async def test_python_worker_continues_a_go_trace(server: RunningServer) -> None:
    """The other way round: a job that the Go client adds with tracing on runs in a Python worker whose
    run's span is a child of the Go add's span."""
    provider, exporter = _traced_provider()
    queue = "go-to-py-traced"
    async with QueueManager(address=server.address, tracer_provider=provider) as qm:
        await qm.register_queue(queue)
        output = await _go_test(
            "TestTracedAddForAPythonWorker",
            QM_TEST_TRACE_ADDRESS=server.address,
            QM_TEST_TRACE_ADD_QUEUE=queue,
        )
        found = re.search(r"^GO-TRACE (\S+) ([0-9a-f]{32})-([0-9a-f]{16})$", output, re.MULTILINE)
        assert found, output
        job_id, trace_id, span_id = found.groups()

        @qm.processor(queue)
        async def run(job: JobContext) -> str:
            return "python ran it"

        await qm.start_workers()
        done = await qm.wait_for_job(queue, job_id, timeout=30)
        assert done.state is JobState.COMPLETED and done.result == "python ran it"
        runs = [s for s in exporter.get_finished_spans() if s.name == f"{queue} process"]
        assert len(runs) == 1 and runs[0].parent is not None and runs[0].context is not None
        assert f"{runs[0].parent.trace_id:032x}-{runs[0].parent.span_id:016x}" == f"{trace_id}-{span_id}"
        assert runs[0].context.trace_id == runs[0].parent.trace_id
    provider.shutdown()


@pytest.mark.timeout(GO_TIMEOUT_S + 30)
async def test_payload_codecs_across_go_and_python(server: RunningServer) -> None:
    """Python encrypts a job that a Go worker decodes and answers with an encrypted result the Python client
    reads; Go encrypts a job the Python worker decodes. Both take the keys as the CLI and workers do, from
    QM_CODEC_KEYS; the server only ever holds the encoded bytes."""
    key = base64.b64encode(os.urandom(32)).decode()
    keys = {"QM_CODEC_KEYS": f"k7:{key}", "QM_CODEC_GZIP_MIN_SIZE": "0"}
    async with (
        QueueManager(address=server.address, codecs=codecs_from_env(keys)) as qm,
        QueueManager(address=server.address, codecs=[]) as plain,
    ):
        await qm.register_queue("py-to-go-sealed")
        await qm.register_queue("go-to-py-sealed")
        job = await qm.add_job("py-to-go-sealed", "from-python", {"from": "python", "secret": "s3cret"})
        await _go_test(
            "TestCodecsWorkerRunsAPythonJob",
            QM_TEST_CODEC_ADDRESS=server.address,
            QM_TEST_CODEC_PY_QUEUE="py-to-go-sealed",
            QM_TEST_CODEC_PY_JOB=job.id,
            **keys,
        )
        done = await qm.get_job("py-to-go-sealed", job.id)
        assert done.result == {"from": "go", "echo": {"from": "python", "secret": "s3cret"}}
        stored = (await plain.get_job("py-to-go-sealed", job.id)).result
        assert isinstance(stored, EncodedPayload) and stored.key_id == "k7"
        assert stored.codecs == ("aes-256-gcm",)  # gzip left out: it would not have saved bytes

        output = await _go_test(
            "TestCodecsAddForAPythonWorker",
            QM_TEST_CODEC_ADDRESS=server.address,
            QM_TEST_CODEC_GO_QUEUE="go-to-py-sealed",
            **keys,
        )
        found = re.search(r"^GO-CODEC (\S+)$", output, re.MULTILINE)
        assert found, output
        job_id = found.group(1)
        assert isinstance((await plain.get_job("go-to-py-sealed", job_id)).data, EncodedPayload)
        seen: list[object] = []

        @qm.processor("go-to-py-sealed")
        async def run(ctx: JobContext) -> None:
            seen.append(ctx.data)

        await qm.start_workers()
        assert (await qm.wait_for_job("go-to-py-sealed", job_id, timeout=30)).state == JobState.COMPLETED
        assert seen == [{"from": "go", "secret": "s3cret"}]
