"""The Java client (clients/java): its JUnit suite (`mvn test`, offline after `make java-dev`) against real
servers started here (plain, one that requires a token, one that requires mutual TLS); every test of the
suite must pass, none skipped."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import ServerFactory, stop_server_timeouts
from tests.procs import run_to_end
from tests.security_kit import make_pki, token_file
from tests.split_proxy import SplitProxy

JAVA_DIR = Path(__file__).resolve().parent.parent / "clients" / "java"
MVN = shutil.which("mvn")

# The plain server's lease: short, so that a run outlives several leases in little time (heartbeats every
# third of it).
LEASE_MS = 900

# Maven starts, compiles what changed and runs the suite (about a minute).
JAVA_TIMEOUT_S = 300

# Every test of the suite, Class.method, each of which must pass: a test renamed or lost fails here.
EXPECTED = {
    "ProducerTest.addJobStoresItsOptionsAndIsIdempotent",
    "ProducerTest.dedupKeyAnswersWithTheJobHoldingIt",
    "ProducerTest.addBulkAddsEveryJobInOrder",
    "ProducerTest.addBulkIsAllOrNone",
    "ProducerTest.addBulkSplitsJobsOverOneMessageLimit",
    "ProducerTest.metricsCountJobsByState",
    "ProducerTest.pauseAndResumeQueue",
    "ProducerTest.cleanQueueRemovesJobsOfAState",
    "ProducerTest.errorsMapToTypedExceptionsWithTheServersMessage",
    "ProducerTest.waitForJobEndsWithDeadlineExceeded",
    "ProducerTest.aNullQueueNameIsRefusedNamingTheArgument",
    "AdminTest.listJobsPagesAndFiltersAndCounts",
    "AdminTest.bulkActionsAreBoundedAndFollowTheirToken",
    "AdminTest.jobControlMovesOneJob",
    "AdminTest.jobLogsComeInPages",
    "AdminTest.queuesAreReadDrainedAndObliterated",
    "AdminTest.workersAreListedAndActiveJobsHoldObliterate",
    "AdminTest.groupsHaveLimitsAndPauses",
    "AdminTest.deadLettersAreListedAndRedriven",
    "SecurityTest.tokenIsSentOnEveryCall",
    "SecurityTest.mutualTls",
    "SecurityTest.refusedTlsHandshakesSayWhatToChange",
    "WorkerTest.completesWithResultProgressAndLogs",
    "WorkerTest.failuresAreRetriedThenFailForGood",
    "WorkerTest.cancelStopsTheRunningHandler",
    "WorkerTest.jobTimeoutStopsTheRunAndFailsTheAttempt",
    "WorkerTest.aRunToldToStopKeepsItsReasonWhenTheServerThenEndsItsLease",
    "WorkerTest.workerTimesTheRunOutWhenTheServerDoesNot",
    "WorkerTest.heartbeatsKeepARunLongerThanItsLease",
    "WorkerTest.shutdownLetsRunningJobsFinish",
    "WorkerTest.shutdownAbandonsRunsPastItsGrace",
    "WorkerTest.checkpointIsWhatTheNextAttemptReads",
    "OptionsTest.everyJobOptionIsStoredAndReadBack",
    "OptionsTest.chainRunsEachLinkAfterTheOneBeforeAndRemoveOnCompleteRemovesTheJob",
    "OptionsTest.expiredJobIsCancelledWithoutARun",
    "OptionsTest.workerLabelsRouteTheJobToAWorkerThatHasThem",
    "OptionsTest.serverRefusesBadJobOptionsNamingTheField",
    "OptionsTest.buildersRefuseWhatTheWireCannotCarry",
    "OptionsTest.registerQueueStoresEverySetting",
    "OptionsTest.registeringAgainReplacesTheWholeConfig",
    "OptionsTest.serverRefusesBadQueueConfigNamingTheField",
    "FlowsTest.workflowFollowsBranchesDependenciesAndConditions",
    "FlowsTest.executeWithARunIdIsIdempotent",
    "FlowsTest.listWorkflowsPagesByCursor",
    "FlowsTest.cancelStopsARunAndRetryRerunsItsFailedSteps",
    "FlowsTest.badWorkflowsAreRefusedWithAPreciseError",
    "SchedulesEventsTest.anIntervalScheduleAddsItsJobs",
    "SchedulesEventsTest.aCronScheduleIsReplacedInPlace",
    "SchedulesEventsTest.badSchedulesAreRefusedWithAPreciseError",
    "SchedulesEventsTest.pushedEventsRunTheirTriggersOncePerEventId",
    "SchedulesEventsTest.badEventsAndTriggersAreRefusedWithAPreciseError",
    "PullTest.fetchedJobsCompleteFailAndReportProgress",
    "PullTest.aLostLeaseIsRefusedAndACancelIsSeenOnExtend",
    "PullTest.aLongPollAnswersWhenAJobArrives",
    "PullTest.badFetchesAreRefused",
    "PullTest.aJobFetchedElsewhereIsSettledByItsIdAndToken",
    "ParkTest.delayedExceptionRunsTheJobAgainLaterWithoutAnAttempt",
    "ParkTest.waitForEventParksTheRunUntilTheEventIsPushed",
    "ParkTest.waitForChildrenRunsTheParentAgainWithTheirOutcomes",
    "ParkTest.badWaitsAreRefusedAndTheRunGoesOn",
    "ParkTest.runsParkedThroughAnotherServerFreeTheirLeases",
    "ParkTest.aHeartbeatCrossingTheCallThatParksTheRunIsNoWarning",
    "ControlTest.workerObeysQuietResumeAndStop",
    "ControlTest.setWorkerConcurrencyRaisesAndLowersTheRuns",
    "ControlTest.badControlCallsAreRefusedWithAPreciseError",
    "WatchTest.eventsFollowAJobThroughItsLife",
    "WatchTest.filtersPickTypesAndJobNames",
    "WatchTest.badWatchesAreRefused",
    "CodecsTest.encodesToTheSharedWireFormatAndBack",
    "CodecsTest.decodesTheGoldenVectorsAndRefusesTamperedOnes",
    "CodecsTest.settingsThatCannotWorkAreRefusedWhenTheClientIsMade",
    "CodecsTest.environmentVariablesGiveTheDefaultCodecs",
    "CodecsTest.pythonReadsWhatJavaEncodesAndJavaReadsWhatPythonEncodes",
    "CodecsTest.workerRunsAnEncodedJobAndStoresItsResultEncoded",
    "CodecsTest.aWrongKeyIsRefusedAndAJobNoWorkerCanReadFailsForGood",
    "TracingTest.addCarriesTheProducerSpanAndTheRunIsItsChild",
    "TracingTest.aWorkerContinuesATraceparentSetByAnotherClient",
    "TracingTest.withoutATracerNothingIsTracedAndNoContextIsSent",
}


@pytest.fixture(autouse=True)
def maven_installed() -> None:
    """The Java client is part of the product: without Maven its tests fail rather than skip."""
    if MVN is None:
        pytest.fail("mvn is not installed: the Java client (clients/java) needs Maven and Java 17")


def _java_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QM_TOKEN", "QM_TLS", "QM_CODEC"))}
    env.update(extra)
    return env


def _results(reports: Path) -> dict[str, str]:
    """Each test's verdict (passed, failed, error, skipped) from Surefire's XML reports."""
    results: dict[str, str] = {}
    for report in reports.glob("TEST-*.xml"):
        for case in ET.parse(report).getroot().iter("testcase"):
            name = f"{case.get('classname', '').rsplit('.', 1)[-1]}.{case.get('name', '')}"
            verdict = "passed"
            for kind in ("failure", "error", "skipped"):
                if case.find(kind) is not None:
                    verdict = kind
            results[name] = verdict
    return results


@pytest.mark.timeout(JAVA_TIMEOUT_S + 30)
async def test_java_client_suite(server_factory: ServerFactory, tmp_path: Path) -> None:
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
    # Worker streams on a server bounding a worker's credits, every other call on `server` (the parked-runs
    # test: its waitForEvent and waitForChildren reach another server than its stream).
    streams = await server_factory(max_worker_credits=4)
    split = SplitProxy(streams=streams.address, calls=server.address)
    env = _java_env(
        QM_TEST_SPLIT_ADDRESS=await split.start(),
        QM_TEST_ADDRESS=server.address,
        QM_TEST_NO_TIMEOUTS_ADDRESS=lax.address,
        QM_TEST_LEASE_MS=str(LEASE_MS),
        QM_TEST_AUTH_ADDRESS=secured.address,
        QM_TEST_TOKEN=tokens["admin"],
        QM_TEST_TLS_ADDRESS=mutual.address,
        QM_TEST_TLS_CA=str(pki.ca),
        QM_TEST_TLS_CERT=str(pki.client_cert),
        QM_TEST_TLS_KEY=str(pki.client_key),
        # The Python client that reads what the Java codecs encode and encodes what they read (CodecsTest).
        QM_TEST_PYTHON=sys.executable,
        QM_TEST_TLS_OTHER_CA=str(pki.other_ca),
    )
    # A build directory of its own (the pom's qm.build.directory), so the conformance worker's build (maybe on
    # the other xdist worker) and this one never rewrite each other's classes; no earlier report can count.
    target = tmp_path / "maven"
    reports = target / "surefire-reports"
    try:
        returncode, output = await run_to_end(
            [MVN or "mvn", "-q", "-B", "-o", "test", f"-Dqm.build.directory={target}"],
            JAVA_DIR,
            env,
            JAVA_TIMEOUT_S,
        )
    finally:
        await split.stop()
    assert returncode == 0, f"mvn test failed:\n{output}"
    results = _results(reports)
    missing = {name for name in EXPECTED if results.get(name) != "passed"}
    assert not missing, f"not passed: {sorted(missing)}\n{results}\n{output}"
    unexpected = set(results) - EXPECTED
    assert not unexpected, f"tests this file does not know: {sorted(unexpected)} (add them to EXPECTED)"
