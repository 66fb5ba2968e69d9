"""Producer backpressure in the ``qm`` command: ``qm queues register --max-size / --group-max-size`` (merged
like the other settings; 0 or off removes), ``qm groups limit --max-size``, MAX_SIZE in ``qm queues list``
and ``qm groups list``, and ``qm add`` into a full queue or group: exit status 1 with the server's message, no
traceback; against a real server."""

from __future__ import annotations

import pytest

from tests.conftest import RunningServer
from tests.test_cli import qm_cli, qm_json, usage_error


async def test_register_merges_max_size_and_list_shows_it(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    first = await qm_json(capsys, server, "queues", "register", "s", "--max-size", "1000")
    assert first["config"]["max_size"] == 1000
    other = await qm_json(capsys, server, "queues", "register", "s", "--concurrency", "5")
    assert (other["config"]["max_size"], other["config"]["concurrency"]) == (1000, 5)  # kept: the CLI merges
    status, out, err = await qm_cli(capsys, "--server", server.address, "queues", "list")
    assert status == 0, err
    header, *rows = out.splitlines()
    at = header.index("MAX_SIZE")  # the columns are aligned; empty cells leave gaps
    assert [row[at:].split()[0] for row in rows if row.startswith("s ")] == ["1000"]
    status, out, err = await qm_cli(capsys, "--server", server.address, "queues", "show", "s")
    assert status == 0 and "max_size           1000" in out.splitlines(), out
    # 0 and off both remove it; the other settings stay.
    for off in ("0", "off"):
        await qm_json(capsys, server, "queues", "register", "s", "--max-size", "7")
        gone = await qm_json(capsys, server, "queues", "register", "s", "--max-size", off)
        assert (gone["config"]["max_size"], gone["config"]["concurrency"]) == (0, 5)


async def test_add_into_a_full_queue_exits_1_with_the_servers_message(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await qm_json(capsys, server, "queues", "register", "f", "--max-size", "1")
    await qm_json(capsys, server, "add", "f", "first")
    status, out, err = await qm_cli(capsys, "--server", server.address, "add", "f", "second")
    assert (status, out) == (1, "")
    assert err.startswith("error: RESOURCE_EXHAUSTED: queue 'f' is full: "), err
    assert "(qm queues register f --max-size)" in err and "the job was not added" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    metrics = await qm_json(capsys, server, "queues", "metrics", "f")
    assert metrics["waiting"] == 1
    await qm_json(capsys, server, "queues", "register", "f", "--max-size", "2")
    assert (await qm_json(capsys, server, "add", "f", "second"))["name"] == "second"


async def test_group_max_size_from_the_queue_and_from_groups_limit(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await qm_json(capsys, server, "queues", "register", "g", "--group-max-size", "1")
    await qm_json(capsys, server, "add", "g", "j", "--group", "acme")
    status, _, err = await qm_cli(capsys, "--server", server.address, "add", "g", "j", "--group", "acme")
    assert status == 1 and err.startswith("error: RESOURCE_EXHAUSTED: group 'acme' of queue 'g' is full: ")
    assert "(qm groups limit g acme --max-size, or qm queues register g --group-max-size)" in err
    # The group's name as the command takes it (it said GROUP): quoted for a shell when it must be.
    await qm_json(capsys, server, "queues", "register", "g2", "--group-max-size", "1")
    await qm_json(capsys, server, "add", "g2", "j", "--group", "o'brien & co")
    status, _, err = await qm_cli(
        capsys, "--server", server.address, "add", "g2", "j", "--group", "o'brien & co"
    )
    assert status == 1 and "(qm groups limit g2 'o'\"'\"'brien & co' --max-size, or qm queues" in err, err
    own = await qm_json(capsys, server, "groups", "limit", "g", "acme", "--max-size", "3")
    assert (own["limits"]["max_size"], own["custom_limits"]) == (3, True)
    await qm_json(capsys, server, "add", "g", "j", "--group", "acme")
    status, out, err = await qm_cli(capsys, "--server", server.address, "groups", "list", "g")
    assert status == 0, err
    header, row = out.splitlines()
    columns = ["GROUP", "WAITING", "ACTIVE", "PAUSED", "CONCURRENCY", "RATE", "MAX_SIZE", "OWN_LIMITS"]
    assert header.split() == columns
    assert row.split() == ["acme", "2", "0", "3", "yes"]
    cleared = await qm_json(capsys, server, "groups", "limit", "g", "acme", "--clear")
    assert (cleared["limits"]["max_size"], cleared["custom_limits"]) == (1, False)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("queues", "register", "q", "--max-size", "-1"), "argument --max-size: must be a whole number"),
        (("queues", "register", "q", "--max-size", "1.5"), "must be a whole number from 0 (no limit) to"),
        (("queues", "register", "q", "--max-size", str(2**48 + 1)), f"to {2**48}, or off, got '{2**48 + 1}'"),
        (("queues", "register", "q", "--group-max-size", "lots"), "argument --group-max-size: must be"),
        (("groups", "limit", "q", "g", "--max-size", "x"), "argument --max-size: must be a whole number"),
        (
            ("groups", "limit", "q", "g", "--clear", "--max-size", "2"),
            "without --concurrency, --rate, --max-size and",
        ),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else None,
)
async def test_bad_size_flags_are_usage_errors(
    server: RunningServer, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], says: str
) -> None:
    err = await usage_error(capsys, server, *argv)
    assert says in err, err
