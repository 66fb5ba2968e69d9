"""The ``qm`` command against a real server (in-process calls in a thread, and a worker subprocess)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from queue_manager import JobState, QueueManager
from queue_manager.cli import main
from tests.conftest import RunningServer

WAIT = 30.0


async def qm_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Runs ``qm ARGV`` in a thread (the server shares this event loop) and returns (status, out, err)."""
    capsys.readouterr()
    status = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return status, out, err


async def qm_json(capsys: pytest.CaptureFixture[str], server: RunningServer, *argv: str) -> Any:
    status, out, err = await qm_cli(capsys, "--server", server.address, "-o", "json", *argv)
    assert status == 0, err
    return json.loads(out)


async def test_queue_and_job_commands(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    registered = await qm_json(
        capsys, server, "queues", "register", "cli-q", "--rate-max", "10", "--rate-duration", "1000"
    )
    assert registered["name"] == "cli-q"
    assert registered["config"]["rate_limit"] == {"max": 10, "duration": 1000, "burst": 0}

    job = await qm_json(
        capsys,
        server,
        "add",
        "cli-q",
        "greet",
        "--data",
        '{"to": "ü"}',
        "--priority",
        "high",
        "--attempts",
        "2",
    )
    assert (job["data"], job["priority"], job["max_attempts"]) == ({"to": "ü"}, "high", 2)
    again = await qm_json(capsys, server, "add", "cli-q", "greet", "--job-id", "fixed-1", "--delay", "60000")
    assert (again["id"], again["state"]) == ("fixed-1", "delayed")

    fetched = await qm_json(capsys, server, "jobs", "get", "cli-q", job["id"])
    assert fetched["id"] == job["id"] and fetched["state"] == "waiting"
    listing = await qm_json(
        capsys, server, "jobs", "list", "cli-q", "--state", "waiting", "--page-size", "10"
    )
    assert [j["id"] for j in listing["jobs"]] == [job["id"]]
    assert listing["next_page_token"] == ""

    metrics = await qm_json(capsys, server, "queues", "metrics", "cli-q")
    assert (metrics["waiting"], metrics["delayed"]) == (1, 1)
    assert (await qm_json(capsys, server, "queues", "pause", "cli-q"))["paused"] is True
    assert (await qm_json(capsys, server, "queues", "resume", "cli-q"))["paused"] is False
    names = [q["name"] for q in await qm_json(capsys, server, "queues", "list")]
    assert "cli-q" in names
    cleaned = await qm_json(capsys, server, "queues", "clean", "cli-q", "--grace", "0", "--state", "delayed")
    assert cleaned == {"queue": "cli-q", "removed": 1}
    removed = await qm_json(capsys, server, "jobs", "remove", "cli-q", job["id"])
    assert removed["previous_state"] == "waiting"


async def test_table_output_and_environment(
    server: RunningServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QM_SERVER", server.address)
    status, out, _ = await qm_cli(capsys, "queues", "register", "env-q")
    assert status == 0 and "env-q" in out
    status, out, _ = await qm_cli(capsys, "add", "env-q", "n", "--data", "[1, 2]")
    assert status == 0 and out.splitlines()[0].startswith("id ")
    # Options of one command never come from the environment: QM_STATE used to fill in `queues clean`'s
    # required --state (and QM_GRACE meant seconds for `worker`, milliseconds for `queues clean`).
    monkeypatch.setenv("QM_STATE", "failed")
    with pytest.raises(SystemExit) as refused:
        await qm_cli(capsys, "queues", "clean", "env-q", "--grace", "0")
    assert refused.value.code == 2 and "--state" in capsys.readouterr().err
    status, out, _ = await qm_cli(capsys, "jobs", "list", "env-q")  # --state's default: waiting
    assert status == 0
    header, row = out.splitlines()
    assert header.split() == [
        "ID",
        "NAME",
        "STATE",
        "PRIORITY",
        "ATTEMPTS_MADE",
        "CREATED_AT",
        "FAILED_REASON",
    ]
    assert row.split()[1:4] == ["n", "waiting", "normal"]
    monkeypatch.setenv("QM_OUTPUT", "json")
    status, out, _ = await qm_cli(capsys, "health")
    assert (status, json.loads(out)) == (0, {"status": "SERVING"})


async def test_errors_exit_1_with_status_name(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = await qm_cli(capsys, "--server", server.address, "jobs", "get", "no-such-queue", "1")
    assert status == 1 and out == ""
    assert err.startswith("error: NOT_FOUND: ")
    status, _, err = await qm_cli(capsys, "--server", server.address, "add", "q", "n", "--data", "{bad")
    assert status == 2 and "--data is not valid JSON" in err
    # The health service answers an unknown service NOT_FOUND with no message at all.
    status, _, err = await qm_cli(capsys, "--server", server.address, "health", "--service", "QueueService")
    assert status == 1 and err.startswith("error: NOT_FOUND: the server reports no health for service")
    assert "queue_manager.v1.QueueService" in err
    status, _, err = await qm_cli(capsys, "--server", "127.0.0.1:1", "queues", "list")
    assert status == 1 and err.startswith("error: UNAVAILABLE: ")


def test_serve_without_the_server_package(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "queue_manager_server.cli", None)
    assert main(["serve", "--listen", "127.0.0.1:0"]) == 2
    assert "the server is not installed" in capsys.readouterr().err


async def test_worker_subprocess_processes_jobs_and_stops_on_sigterm(
    server: RunningServer, tmp_path: Path
) -> None:
    (tmp_path / "cli_worker_app.py").write_text(
        textwrap.dedent(
            """
            from queue_manager import QueueManager

            qm = QueueManager()

            @qm.processor("cli-work")
            async def work(job):
                return {"echo": job.data}

            @qm.processor("cli-other")
            def other(job):
                raise RuntimeError("must not run: not selected with --queue")
            """
        )
    )
    client = QueueManager(address=server.address)
    await client.register_queue("cli-work")
    await client.register_queue("cli-other")
    env = {**os.environ, "QM_SERVER": server.address, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "queue_manager.cli",
        "worker",
        "cli_worker_app",
        "--queue",
        "cli-work",
        "--concurrency",
        "3",
        cwd=tmp_path,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        job = await client.add_job("cli-work", "echo", {"n": 1})
        other = await client.add_job("cli-other", "x")
        async with asyncio.timeout(WAIT):  # nothing announces the completion: poll the server
            while True:
                done = await client.get_job("cli-work", job.id)
                if done.state is JobState.COMPLETED:
                    break
                await asyncio.sleep(0.05)
        assert done.result == {"echo": {"n": 1}}
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT):
            _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
        assert b"connected to" in stderr
        assert (await client.get_job("cli-other", other.id)).state is JobState.WAITING
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await client.shutdown()


async def usage_error(capsys: pytest.CaptureFixture[str], server: RunningServer, *argv: str) -> str:
    """Runs ``qm ARGV``, which must refuse its input as a usage error (exit status 2); returns stderr."""
    try:
        status, out, err = await qm_cli(capsys, "--server", server.address, *argv)
    except SystemExit as exited:  # argparse's own refusals
        status, (out, err) = int(exited.code or 0), capsys.readouterr()
    assert (status, out) == (2, ""), (status, out, err)
    assert "Traceback" not in err
    return err


async def test_register_changes_only_the_settings_given(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    def settings(queue: Any) -> tuple[Any, ...]:
        c = queue["config"]
        return (c["rate_limit"], c["concurrency"], c["dead_letter_queue"], c["disable_dead_letter"])

    first = await qm_json(
        capsys,
        server,
        "queues",
        "register",
        "m",
        "--rate-max",
        "5",
        "--rate-duration",
        "1000",
        "--concurrency",
        "3",
    )
    assert settings(first) == ({"max": 5, "duration": 1000, "burst": 0}, 3, "dead-letter-queue", False)
    moved = await qm_json(capsys, server, "queues", "register", "m", "--dead-letter-queue", "m-dlq")
    assert settings(moved) == ({"max": 5, "duration": 1000, "burst": 0}, 3, "m-dlq", False)
    off = await qm_json(capsys, server, "queues", "register", "m", "--no-dead-letter")
    assert settings(off) == ({"max": 5, "duration": 1000, "burst": 0}, 3, "", True)
    unchanged = await qm_json(capsys, server, "queues", "register", "m")
    assert settings(unchanged) == settings(off) and unchanged["created"] is False
    faster = await qm_json(capsys, server, "queues", "register", "m", "--rate-duration", "500")
    assert settings(faster) == ({"max": 5, "duration": 500, "burst": 0}, 3, "", True)
    on = await qm_json(
        capsys, server, "queues", "register", "m", "--dead-letter-queue", "m-dlq", "--rate-max", "0"
    )
    assert settings(on) == (None, 3, "m-dlq", False)
    async with QueueManager(server.address) as qm:  # what the server stored, not what the CLI printed
        stored = (await qm.get_queue("m")).config
    assert (stored.rate_limit, stored.concurrency, stored.dead_letter_queue) == (None, 3, "m-dlq")

    err = await usage_error(capsys, server, "queues", "register", "m", "--rate-duration", "500")
    assert "--rate-duration needs --rate-max: the queue has no rate limit yet" in err
    err = await usage_error(
        capsys, server, "queues", "register", "m", "--no-dead-letter", "--dead-letter-queue", "x"
    )
    assert "not allowed with" in err


async def test_duration_flags_take_units(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    """Every duration flag takes units as --expire-after does (5s, 2m; a bare number is milliseconds): --delay
    1s was refused as not whole milliseconds."""
    await qm_json(capsys, server, "queues", "register", "units", "--rate-max", "5", "--rate-duration", "2s")
    queue = await qm_json(capsys, server, "queues", "show", "units")
    assert queue["config"]["rate_limit"] == {"max": 5, "duration": 2000, "burst": 0}
    flags = ("--delay", "1h", "--timeout", "2m", "--dedup-key", "k", "--dedup-ttl", "1h30m")
    job = await qm_json(capsys, server, "add", "units", "n", *flags)
    options = job["options"]
    assert (job["state"], options["timeout"], options["dedup"]["ttl"]) == ("delayed", 120_000, 5_400_000)
    created, run_at = (datetime.fromisoformat(job[k]) for k in ("created_at", "run_at"))
    assert abs((run_at - created).total_seconds() - 3600) < 60
    assert (await qm_json(capsys, server, "add", "units", "n", "--delay", "250"))["state"] == "delayed"
    cleaned = await qm_json(capsys, server, "queues", "clean", "units", "--grace", "1d", "--state", "delayed")
    assert cleaned["removed"] == 0
    schedule = await qm_json(capsys, server, "schedules", "add", "units", "s", "j", "--every", "5m")
    assert schedule["every"] == 300_000


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ("add", "q", "n", "--attempts", "10001"),
            "argument --attempts: must be a whole number from 0 (the queue's default) to 10000, got '10001'",
        ),
        (
            ("add", "q", "n", "--delay", "0.4"),
            "argument --delay: must be a duration from 0 ms to 3650d, such as 5m, 90s, 1h30m or 250ms (a "
            "bare number is milliseconds), got '0.4'",
        ),
        (("add", "q", "n", "--timeout", "0"), "argument --timeout: must be a duration from 1 ms to 3650d"),
        (("add", "q", "n", "--delay", "3651d"), "argument --delay: must be a duration from 0 ms to 3650d"),
        # A negative duration with a unit is the flag's value, refused with its range: argparse took it for
        # an option and said "expected one argument".
        (("add", "q", "n", "--delay", "-5s"), "argument --delay: must be a duration from 0 ms to 3650d"),
        (("jobs", "reschedule", "q", "id", "--delay", "-1h30m"), "got '-1h30m'"),
        (("add", "q", "n", "--dedup-ttl", "5 s"), "argument --dedup-ttl: must be a duration from 1 ms to"),
        (
            ("schedules", "add", "q", "s", "j", "--every", "-1000"),
            "argument --every: must be a duration from 1000 ms to 3650d, such as 5m, 90s, 1h30m or 250ms "
            "(a bare number is milliseconds), got '-1000'",
        ),
        (("schedules", "add", "q", "s", "j", "--every", "999ms"), "argument --every: must be a duration"),
        # A schedule with neither a cron expression nor an interval was sent and came back as exit status 1.
        (
            ("schedules", "add", "q", "s", "j"),
            "qm: error: schedules add needs --cron EXPR (such as '0 3 * * *') or --every DURATION (such as "
            "5m): give one of the two",
        ),
        (
            ("schedules", "add", "q", "s", "j", "--cron", "* * * * *", "--every", "5m"),
            "argument --every: not allowed with argument --cron",
        ),
        # A negative value with a unit was read as an option, and refused as a missing argument.
        (("add", "q", "n", "--delay", "-5s"), "argument --delay: must be a duration from 0 ms to 3650d"),
        (("schedules", "add", "q", "s", "j", "--every", "-2s"), "from 1000 ms to 3650d, such as 5m, 90s"),
        (("clock", "advance", "-1h"), "argument DURATION: must be a duration from 0 ms to 3650d"),
        (
            ("schedules", "add", "q", "s", "j", "--every", "60000", "--limit", "-1"),
            "argument --limit: must be a whole number from 0 (no limit) to 4294967295, got '-1'",
        ),
        (
            ("jobs", "wait", "q", "id", "--timeout", "-5"),
            "argument --timeout: must be a duration of at least 0 ms, such as 5m, 90s, 1h30m or 250ms (a "
            "bare number is milliseconds), got '-5'",
        ),
        (
            ("queues", "clean", "q", "--grace", "0", "--state", "failed", "--limit", "-1"),
            "argument --limit: must be a whole number from 0 (no limit) to 4294967295, got '-1'",
        ),
        (
            ("add", "q", "n", "--data", "NaN"),
            "qm: error: --data is not valid JSON: NaN is not a JSON value (RFC 8259 has no NaN or Infinity)",
        ),
        (("add", "q", "n", "--data", '{"x": -Infinity}'), "--data is not valid JSON: -Infinity is not"),
        # A priority or a state is a flag's value too: refused by qm itself, naming the flag, not sent to
        # come back as INVALID_ARGUMENT with exit status 1.
        (
            ("add", "q", "n", "--priority", "urgent"),
            "argument --priority: priority 'urgent' is not one of critical, high, normal, low, background",
        ),
        (
            ("jobs", "priority", "q", "id", "0"),
            "argument priority: priority must be between 1 (critical) and 5 (background), got 0",
        ),
        (("schedules", "add", "q", "s", "j", "--every", "1m", "--priority", "9"), "argument --priority: "),
        (
            ("jobs", "list", "q", "--state", "done"),
            "argument --state: must be waiting, active, delayed, completed, failed, paused or cancelled, "
            "got 'done'",
        ),
        (
            ("jobs", "retry-all", "q", "--state", "waiting"),
            "argument --state: must be failed or cancelled, got 'waiting'",
        ),
        (
            ("jobs", "remove-all", "q", "--state", "active"),
            "got 'active'; cancel active jobs first (qm jobs cancel-all QUEUE --state active), then remove",
        ),
        (("jobs", "cancel-all", "q", "--state", "failed"), "got 'failed'; a finished job cannot be cancel"),
        (("jobs", "count", "q", "--state", "x"), "argument --state: must be waiting, active, delayed"),
        (("queues", "clean", "q", "--state", "active"), "got 'active'; active jobs cannot be cleaned"),
        (("dlq", "list", "--state", "dead"), "argument --state: must be waiting, active, delayed"),
        (("jobs", "logs", "q", "id", "--page-size", "5000"), "argument --page-size: must be a whole number"),
        (("worker", "m", "--concurrency", "0"), "argument --concurrency: must be a whole number from 1 to"),
        (
            ("events", "triggers", "set", "t", "a:*", "q", "n", "--priority", "soon"),
            "argument --priority: priority 'soon' is not one of",
        ),
        (
            ("workflows", "run", "{bad"),
            "qm: error: the workflow definition (the JSON argument) is not valid JSON: Expecting property",
        ),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else None,
)
async def test_bad_flags_are_usage_errors_that_state_the_real_range(
    server: RunningServer, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], says: str
) -> None:
    err = await usage_error(capsys, server, *argv)
    assert says in err, err
    assert "None" not in err


async def test_zero_means_what_the_protocol_says(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--attempts 0`` is the queue's default (JobOptions.attempts), ``--limit 0`` no limit (Schedule.limit):
    as the protocol reads them."""
    async with QueueManager(server.address) as qm:
        await qm.register_queue("z", default_job_options={"attempts": 4})
    job = await qm_json(capsys, server, "add", "z", "n", "--attempts", "0")
    assert job["max_attempts"] == 4
    schedule = await qm_json(
        capsys, server, "schedules", "add", "z", "s", "j", "--every", "60000", "--limit", "0"
    )
    assert schedule["limit"] is None


async def test_add_says_when_the_job_already_existed(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """An add that finds its --job-id (or --dedup-key) taken adds nothing, shows the existing job, says so on
    stderr and still exits 0 (the job exists, as asked)."""
    await qm_json(capsys, server, "queues", "register", "again")
    first = await qm_json(capsys, server, "add", "again", "n", "--job-id", "fixed")
    assert first["created"] is True
    status, out, err = await qm_cli(
        capsys, "--server", server.address, "-o", "json", "add", "again", "m", "--job-id", "fixed"
    )
    assert status == 0 and json.loads(out)["created"] is False and json.loads(out)["name"] == "n"
    assert err == "qm add: job 'fixed' already existed in queue 'again'; nothing was added\n"
    held = await qm_json(capsys, server, "add", "again", "n", "--dedup-key", "k")
    status, out, err = await qm_cli(
        capsys, "--server", server.address, "add", "again", "n", "--dedup-key", "k"
    )
    assert status == 0 and out.startswith(f"id                {held['id']}\n")
    assert err == f"qm add: job {held['id']!r} of queue 'again' holds --dedup-key 'k'; nothing was added\n"
    status, _, err = await qm_cli(capsys, "--server", server.address, "add", "again", "n")
    assert (status, err) == (0, "")


async def test_add_shows_what_the_add_did(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    """``qm add`` shows the job with what the add did: its created and replaced rows were always empty (the
    job read from the answer leaves them unset), and ``-o json`` had ``"replaced": null`` for a replace."""
    await qm_json(capsys, server, "queues", "register", "did")
    for created in ("True", "False"):
        status, out, _ = await qm_cli(capsys, "--server", server.address, "add", "did", "n", "--job-id", "1")
        assert status == 0 and re.search(rf"^created +{created}$", out, re.M), out
        assert re.search(r"^replaced +False$", out, re.M), out
    debounce = ("add", "did", "n", "--dedup-key", "k", "--dedup-mode", "replace", "--delay", "1m")
    first = await qm_json(capsys, server, *debounce, "--data", "1")
    assert (first["created"], first["replaced"], first["disposition"]) == (True, False, "created")
    again = await qm_json(capsys, server, *debounce, "--data", "2")
    assert (again["id"], again["data"]) == (first["id"], 2)
    assert (again["created"], again["replaced"], again["disposition"]) == (False, True, "replaced")


async def test_a_table_row_stays_one_line(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    """A failure reason of several lines (``qm exec`` puts the command's stderr in it) shows in a table with
    its line breaks escaped: its lines used to start rows of their own under the table's header."""
    async with QueueManager(server.address) as qm:
        await qm.register_queue("rows")
        await qm.add_job("rows", "n", None, {"job_id": "multi"})
        [pulled] = await qm.fetch_jobs("rows", wait=5)
        await pulled.fail("the command exited with status 3; the last lines of its stderr:\nbad\tinput")
    failed = ("jobs", "list", "rows", "--state", "failed")
    status, out, _ = await qm_cli(capsys, "--server", server.address, *failed)
    assert status == 0
    header, row = out.splitlines()
    assert header.startswith("ID") and row.startswith("multi ")
    assert row.endswith("the last lines of its stderr:\\nbad\\tinput")


async def test_wait_timeout_states_its_unit(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await qm_json(capsys, server, "queues", "register", "w")
    job = await qm_json(capsys, server, "add", "w", "n")
    status, _, err = await qm_cli(
        capsys, "--server", server.address, "jobs", "wait", "w", job["id"], "--timeout", "100"
    )
    assert (status, err) == (
        124,
        f"error: DEADLINE_EXCEEDED: job {job['id']!r} in queue 'w' is still waiting after a wait of 0.1 s\n",
    )


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ("127.0.0.1:99999", "argument --server: address '127.0.0.1:99999': the port must be a number from 1"),
        ("[::1", r"argument --server: address '\[::1': write an IPv6 address as \[address\]:port"),
    ],
)
def test_a_bad_server_address_is_a_usage_error_naming_the_flag(
    server: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        main(["--server", server, "queues", "list"])
    assert refused.value.code == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize("size", ["0", "-1", "1001"])
def test_workflows_list_refuses_a_page_size_out_of_its_range(
    size: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``qm workflows list --page-size`` says 1 to 1000: 0 was taken (as the server's default), -1 reached the
    server as "Value out of range: -1", naming no flag."""
    with pytest.raises(SystemExit) as refused:
        main(["workflows", "list", "--page-size", size])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --page-size: must be a whole number from 1 to 1000, got '{size}'" in err, err
