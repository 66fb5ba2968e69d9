"""``qm pull``: a pull worker from the shell, against a real server (in-process calls in a thread, and a shell
script running ``qm`` as a subprocess)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from queue_manager import JobState, QueueManager
from tests.conftest import RunningServer
from tests.rawworker import eventually
from tests.test_cli import qm_cli, usage_error

WAIT = 30.0


@pytest.fixture
async def qm(server: RunningServer) -> Any:
    async with QueueManager(address=server.address) as client:
        await client.register_queue("work")
        yield client


async def pull(capsys: pytest.CaptureFixture[str], server: RunningServer, *argv: str) -> tuple[int, str, str]:
    return await qm_cli(capsys, "--server", server.address, "pull", *argv)


async def fetched(capsys: pytest.CaptureFixture[str], server: RunningServer, *argv: str) -> list[Any]:
    """``qm pull fetch ARGV -o json``: its JSON lines."""
    status, out, err = await pull(capsys, server, "fetch", *argv, "-o", "json")
    assert status == 0, err
    return [json.loads(line) for line in out.splitlines()]


async def test_fetch_prints_json_lines_and_complete_settles(
    qm: QueueManager, server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    a = await qm.add_job("work", "resize", {"w": 3}, {"attempts": 3})
    b = await qm.add_job("work", "crop", b"\x00")
    first, second = await fetched(
        capsys, server, "work", "--max", "5", "--lease", "2m", "--worker-id", "sh-1"
    )
    assert (first["id"], first["name"], first["data"], first["queue_name"]) == (
        a.id,
        "resize",
        {"w": 3},
        "work",
    )
    assert (first["attempt"], first["max_attempts"], first["redelivery"]) == (1, 3, False)
    assert first["lease_token"] and first["lease_expires"].startswith("20")
    assert second["id"] == b.id and second["data"] == {"base64": "AA=="}
    assert (await qm.get_job("work", a.id)).worker_id == "sh-1"

    status, out, err = await pull(
        capsys, server, "complete", "work", a.id, "--token", first["lease_token"], "--result", '{"ok": 1}'
    )
    assert (status, out.strip(), err) == (0, f"completed work/{a.id}", "")
    done = await qm.get_job("work", a.id)
    assert (done.state, done.result) == (JobState.COMPLETED, {"ok": 1})
    # Nothing left: no line at all, and exit status 0.
    assert await fetched(capsys, server, "work") == []
    # The run's duration was measured by the server (the CLI reports none).
    assert (await qm.get_queue_metrics("work")).average_processing_time is not None


async def test_fetch_as_a_table_and_waits_for_an_add(
    qm: QueueManager, server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    waiting = asyncio.create_task(pull(capsys, server, "fetch", "work", "--wait", "20s"))

    async def polling() -> bool:  # the long poll is under way before the add
        return server.app.queue_service.pulls.waiting("work") == 1

    await eventually(polling)
    job = await qm.add_job("work", "late")
    status, out, err = await waiting
    assert status == 0, err
    header, row = out.splitlines()
    assert header.split() == ["ID", "NAME", "ATTEMPT", "LEASE_TOKEN", "LEASE_EXPIRES", "DATA"]
    assert row.split()[:3] == [job.id, "late", "1"]


async def test_fail_extend_and_progress(
    qm: QueueManager, server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    a = await qm.add_job("work", "a", None, {"attempts": 2})
    b = await qm.add_job("work", "b", None, {"attempts": 5})
    c = await qm.add_job("work", "c", None, {"attempts": 5})
    leases = {j["id"]: j["lease_token"] for j in await fetched(capsys, server, "work", "--max", "3")}

    status, out, err = await pull(
        capsys, server, "progress", "work", a.id, "--token", leases[a.id], "--progress", "40", "--log", "one"
    )
    assert status == 0, err
    assert (await qm.get_job("work", a.id)).progress == 40
    lines, _ = await qm.get_job_logs("work", a.id)
    assert [line.message for line in lines] == ["one"]

    status, out, err = await qm_cli(
        capsys, "--server", server.address, "-o", "json", "pull", "extend", "work", a.id,
        "--token", leases[a.id], "--lease", "90s",
    )  # fmt: skip
    assert status == 0, err
    extended = json.loads(out)
    assert extended["cancel_requested"] is False and extended["lease_expires"]
    await qm.cancel_job("work", a.id)
    status, out, err = await pull(capsys, server, "extend", "work", a.id, "--token", leases[a.id])
    assert status == 0 and "cancel requested: stop the run" in out, (out, err)

    status, out, err = await pull(
        capsys, server, "fail", "work", b.id, "--token", leases[b.id], "--reason", "x"
    )
    assert status == 0 and out.startswith(f"failed work/{b.id}: will retry at "), (out, err)
    status, out, err = await pull(
        capsys, server, "fail", "work", c.id, "--token", leases[c.id], "--reason", "disk full", "--no-retry"
    )
    assert (status, out.strip()) == (0, f"failed work/{c.id} for good"), err
    failed = await qm.get_job("work", c.id)
    assert (failed.state, failed.failed_reason) == (JobState.FAILED, "disk full")

    d = await qm.add_job("work", "d")
    # b may be back waiting too (retried without backoff): d is the one of the fetch named d.
    [leased] = [j for j in await fetched(capsys, server, "work", "--max", "10") if j["id"] == d.id]
    status, out, err = await qm_cli(
        capsys, "--server", server.address, "-o", "json", "pull", "fail", "work", d.id,
        "--token", leased["lease_token"], "--reason", "slow down", "--retry-after", "1m",
    )  # fmt: skip
    assert status == 0, err
    outcome = json.loads(out)
    assert outcome["will_retry"] is True and outcome["retry_at"]
    assert (await qm.get_job("work", d.id)).state == JobState.DELAYED


async def test_a_stale_token_and_a_missing_job_are_refused_precisely(
    qm: QueueManager, server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    job = await qm.add_job("work", "a")
    [leased] = await fetched(capsys, server, "work")
    status, out, err = await pull(capsys, server, "complete", "work", job.id, "--token", "not-the-token")
    assert (status, out) == (1, "")
    assert err.startswith("error: FAILED_PRECONDITION: lease of job") and "not held by this token" in err
    assert (await qm.get_job("work", job.id)).state == JobState.ACTIVE  # nothing changed

    status, out, err = await pull(capsys, server, "extend", "work", "no-such-job", "--token", "t")
    assert (status, out) == (1, "") and err.startswith("error: NOT_FOUND: "), err
    status, out, err = await pull(capsys, server, "fetch", "nowhere")
    assert status == 1 and "qm queues register nowhere" in err, err

    status, _, err = await pull(capsys, server, "complete", "work", job.id, "--token", leased["lease_token"])
    assert status == 0, err
    status, out, err = await pull(
        capsys, server, "complete", "work", job.id, "--token", leased["lease_token"]
    )
    # The token's own run was reported already: the refusal names that cause too, not only expiry or removal.
    assert status == 1 and "FAILED_PRECONDITION" in err and "its run was reported already" in err, err
    assert err.rstrip().endswith("this call changed nothing"), err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (("fetch", "work", "--max", "0"), "--max: must be a whole number from 1 to 1000"),
        (("fetch", "work", "--max", "1001"), "--max"),
        # The maxima are written as the flags take them: they read "0d" when only whole days were written.
        (("fetch", "work", "--wait", "31s"), "--wait: must be a duration from 0 ms to 30s,"),
        (("fetch", "work", "--lease", "500ms"), "--lease: must be a duration from 1000 ms to 1h,"),
        (
            ("extend", "work", "j", "--token", "t", "--lease", "2h"),
            "--lease: must be a duration from 1000 ms to 1h",
        ),
        (("complete", "work", "j"), "--token"),
        (("complete", "work", "j", "--token", "t", "--result", "{nope"), "--result is not valid JSON"),
        (("fail", "work", "j", "--token", "t"), "--reason"),
        (
            ("fail", "work", "j", "--token", "t", "--reason", "x", "--no-retry", "--retry-after", "5s"),
            "not allowed",
        ),
        (("progress", "work", "j", "--token", "t"), "give --progress, --log or both"),
        (("fetch", "bad:name"), ""),
    ],
)
async def test_bad_input_is_refused_before_any_call(
    server: RunningServer, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], words: str
) -> None:
    if argv == ("fetch", "bad:name"):  # the client's own check: INVALID_ARGUMENT, exit status 1
        status, out, err = await pull(capsys, server, *argv)
        assert (status, out) == (1, "") and err.startswith("error: INVALID_ARGUMENT: "), err
        return
    err = await usage_error(capsys, server, "pull", *argv)
    assert words in err, err


async def test_a_shell_script_works_a_queue_with_fetch_and_complete(
    qm: QueueManager, server: RunningServer, tmp_path: Path
) -> None:
    """A whole pull worker in sh: fetch a job at a time until none is left, complete each with its data
    doubled (read and written with the Python at hand: no jq needed)."""
    jobs = [await qm.add_job("work", "double", {"n": n}) for n in range(5)]
    script = tmp_path / "worker.sh"
    script.write_text(
        textwrap.dedent(
            """\
            set -eu
            field() { "$PY" -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
            done=0
            while :; do
              job=$("$PY" -m queue_manager.cli -o json pull fetch work --wait 1s --worker-id sh)
              [ -n "$job" ] || break
              id=$(field "$job" id)
              token=$(field "$job" lease_token)
              n=$("$PY" -c 'import json, sys; print(json.loads(sys.argv[1])["data"]["n"])' "$job")
              result=$((n * 2))
              "$PY" -m queue_manager.cli pull complete work "$id" --token "$token" --result "$result"
              done=$((done + 1))
            done
            echo "worked $done"
            """
        )
    )
    env = {
        **os.environ,
        "QM_SERVER": server.address,
        "PY": sys.executable,
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    process = await asyncio.create_subprocess_exec(
        "sh", str(script), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(WAIT * 4):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    assert out.decode().splitlines()[-1] == "worked 5"
    for n, job in enumerate(jobs):
        done = await qm.get_job("work", job.id)
        assert (done.state, done.result) == (JobState.COMPLETED, n * 2)
    metrics = await qm.get_queue_metrics("work")
    assert metrics.completed_total == 5
