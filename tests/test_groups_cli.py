"""Fairness groups in the ``qm`` command: ``qm add --group``, ``qm queues register --group-concurrency /
--group-rate / --group-max-size`` (merged like the other settings), ``qm groups list``, ``qm groups limit``
and ``qm groups pause`` / ``resume``, the group limits in ``qm queues list`` and ``qm queues show``; against
a real server."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import RunningServer
from tests.test_cli import qm_cli, qm_json, usage_error

HEADER = ["GROUP", "WAITING", "ACTIVE", "PAUSED", "CONCURRENCY", "RATE", "MAX_SIZE", "OWN_LIMITS"]


def group_limits(queue: Any) -> Any:
    return queue["config"]["group_limits"]


async def test_register_merges_the_group_flags_and_list_and_show_give_them(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    first = await qm_json(
        capsys, server, "queues", "register", "t", "--group-concurrency", "2", "--group-rate", "10/1s"
    )
    per_second = {"max": 10, "duration": 1000, "burst": 0}
    assert group_limits(first) == {"concurrency": 2, "rate_limit": per_second, "max_size": 0}
    other = await qm_json(capsys, server, "queues", "register", "t", "--concurrency", "50")
    assert group_limits(other) == group_limits(first)  # kept: the CLI merges
    rate_only = await qm_json(capsys, server, "queues", "register", "t", "--group-rate", "100/1m")
    per_minute = {"max": 100, "duration": 60_000, "burst": 0}
    assert group_limits(rate_only) == {"concurrency": 2, "rate_limit": per_minute, "max_size": 0}
    sized = await qm_json(capsys, server, "queues", "register", "t", "--group-max-size", "500")
    assert group_limits(sized) == {"concurrency": 2, "rate_limit": per_minute, "max_size": 500}
    status, out, err = await qm_cli(capsys, "--server", server.address, "queues", "list")
    assert status == 0, err
    assert "GROUP_LIMITS" in out.splitlines()[0] and "concurrency=2,rate=100/1m,max_size=500" in out
    status, out, err = await qm_cli(capsys, "--server", server.address, "queues", "show", "t")
    assert status == 0, err
    assert "group_limits       concurrency=2,rate=100/1m,max_size=500" in out.splitlines(), out
    shown = await qm_json(capsys, server, "queues", "show", "t")
    assert group_limits(shown) == group_limits(sized)

    no_rate = await qm_json(capsys, server, "queues", "register", "t", "--group-rate", "off")
    assert group_limits(no_rate) == {"concurrency": 2, "rate_limit": None, "max_size": 500}
    no_conc = await qm_json(capsys, server, "queues", "register", "t", "--group-concurrency", "0")
    assert group_limits(no_conc) == {"concurrency": 0, "rate_limit": None, "max_size": 500}
    # "off" removes a concurrency limit as it does a rate and a size (it was refused as not a number).
    await qm_json(capsys, server, "queues", "register", "t", "--group-concurrency", "4", "--concurrency", "9")
    no_conc = await qm_json(
        capsys, server, "queues", "register", "t", "--group-concurrency", "off", "--concurrency", "off"
    )
    assert group_limits(no_conc) == {"concurrency": 0, "rate_limit": None, "max_size": 500}
    assert no_conc["config"]["concurrency"] == 0
    none = await qm_json(capsys, server, "queues", "register", "t", "--group-max-size", "off")
    assert group_limits(none) is None
    status, out, _ = await qm_cli(capsys, "--server", server.address, "queues", "show", "t")
    assert "group_limits" in out and "concurrency=" not in out


async def test_add_with_a_group_then_list_and_limit_the_groups(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await qm_json(capsys, server, "queues", "register", "g", "--group-concurrency", "3")
    for group in ("acme", "globex", "acme", "tenant/é 1"):
        job = await qm_json(capsys, server, "add", "g", "work", "--group", group)
        assert job["options"]["group"] == group
    listed = await qm_json(capsys, server, "groups", "list", "g")
    assert [(g["name"], g["waiting"], g["limits"]["concurrency"]) for g in listed["groups"]] == [
        ("acme", 2, 3),
        ("globex", 1, 3),
        ("tenant/é 1", 1, 3),
    ]
    assert listed["next_page_token"] == ""
    metrics = await qm_json(capsys, server, "queues", "metrics", "g")
    assert metrics["groups"] == 3

    own = await qm_json(
        capsys, server, "groups", "limit", "g", "acme", "--concurrency", "1", "--rate", "5/250ms"
    )
    assert own["limits"] == {
        "concurrency": 1,
        "rate_limit": {"max": 5, "duration": 250, "burst": 0},
        "max_size": 0,
    }
    assert own["custom_limits"] is True
    status, out, err = await qm_cli(capsys, "--server", server.address, "groups", "list", "g")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].split() == HEADER
    assert lines[1].split() == ["acme", "2", "0", "1", "5/250ms", "yes"]
    assert lines[2].split() == ["globex", "1", "0", "3"]
    # Pages: one group a page, the next page's command given; --all reads them all.
    status, out, _ = await qm_cli(
        capsys, "--server", server.address, "groups", "list", "g", "--page-size", "1"
    )
    assert len(out.splitlines()) == 3 and out.splitlines()[2].startswith("next page: --page-token ")
    token = out.splitlines()[2].split()[-1]
    second = await qm_json(capsys, server, "groups", "list", "g", "--page-size", "1", "--page-token", token)
    assert [g["name"] for g in second["groups"]] == ["globex"]
    every = await qm_json(capsys, server, "groups", "list", "g", "--page-size", "1", "--all")
    assert [g["name"] for g in every["groups"]] == ["acme", "globex", "tenant/é 1"]
    assert every["next_page_token"] == ""

    # A group without jobs may be given limits; --clear gives it back to the queue's (and forgets it).
    idle = await qm_json(capsys, server, "groups", "limit", "g", "initech", "--rate", "10/1s")
    assert (idle["waiting"], idle["limits"]["concurrency"], idle["custom_limits"]) == (0, 0, True)
    unlimited = await qm_json(capsys, server, "groups", "limit", "g", "initech", "--concurrency", "off")
    assert (unlimited["limits"]["concurrency"], unlimited["custom_limits"]) == (0, True)
    cleared = await qm_json(capsys, server, "groups", "limit", "g", "initech", "--clear")
    queue_limits = {"concurrency": 3, "rate_limit": None, "max_size": 0}
    assert (cleared["limits"], cleared["custom_limits"]) == (queue_limits, False)
    status, out, err = await qm_cli(
        capsys, "--server", server.address, "groups", "limit", "g", "acme", "--clear"
    )
    assert status == 0, err
    assert out.splitlines()[1].split() == ["acme", "2", "0", "3"]


async def test_group_errors_name_the_flag_or_the_queue(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = await qm_cli(capsys, "--server", server.address, "groups", "list", "missing")
    assert (status, out) == (1, "")
    assert err.startswith("error: NOT_FOUND: ") and "missing" in err
    status, _, err = await qm_cli(
        capsys, "--server", server.address, "groups", "limit", "missing", "g", "--concurrency", "1"
    )
    assert status == 1 and err.startswith("error: NOT_FOUND: ")
    for action in ("pause", "resume"):
        status, out, err = await qm_cli(capsys, "--server", server.address, "groups", action, "missing", "g")
        assert (status, out) == (1, "") and err.startswith("error: NOT_FOUND: ") and "missing" in err


async def test_pause_and_resume_a_group_and_list_shows_it_paused(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await qm_json(capsys, server, "queues", "register", "p")
    for group in ("acme", "acme", "globex"):
        await qm_json(capsys, server, "add", "p", "work", "--group", group)
    paused = await qm_json(capsys, server, "groups", "pause", "p", "acme")
    assert (paused["name"], paused["waiting"], paused["paused"]) == ("acme", 2, True)
    status, out, err = await qm_cli(capsys, "--server", server.address, "groups", "pause", "p", "initech")
    assert status == 0, err  # a group without jobs may be paused: it stays listed
    assert [line.split() for line in out.splitlines()] == [HEADER, ["initech", "0", "0", "yes"]]
    status, out, err = await qm_cli(capsys, "--server", server.address, "groups", "list", "p")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].split() == HEADER
    assert [line.split() for line in lines[1:]] == [
        ["acme", "2", "0", "yes"],
        ["globex", "1", "0"],
        ["initech", "0", "0", "yes"],
    ]
    listed = await qm_json(capsys, server, "groups", "list", "p")
    assert [(g["name"], g["paused"]) for g in listed["groups"]] == [
        ("acme", True),
        ("globex", False),
        ("initech", True),
    ]
    resumed = await qm_json(capsys, server, "groups", "resume", "p", "acme")
    assert (resumed["name"], resumed["waiting"], resumed["paused"]) == ("acme", 2, False)
    status, out, err = await qm_cli(capsys, "--server", server.address, "groups", "resume", "p", "initech")
    assert status == 0, err
    assert out.splitlines()[1].split() == ["initech", "0", "0"]
    listed = await qm_json(capsys, server, "groups", "list", "p")
    assert [(g["name"], g["paused"]) for g in listed["groups"]] == [("acme", False), ("globex", False)]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("add", "q", "n", "--group", ""), "argument --group: group must be 1 to 128 characters"),
        (("add", "q", "n", "--group", "a\tb"), "without control characters"),
        (("add", "q", "n", "--group", "x" * 129), "argument --group: group must be 1 to 128"),
        (("queues", "register", "q", "--group-rate", "10"), "'10' is not MAX/DURATION, such as 10/1s"),
        (("queues", "register", "q", "--group-rate", "0/1s"), "MAX of '0/1s' must be a whole number from 1"),
        (("queues", "register", "q", "--group-rate", "10/soon"), "DURATION of '10/soon' must be a duration"),
        (
            ("queues", "register", "q", "--group-concurrency", "-1"),
            "argument --group-concurrency: must be a whole number from 0 (no limit) to 4294967295, or off, "
            "got '-1'",
        ),
        (
            ("queues", "register", "q", "--max-size", "-5"),
            "argument --max-size: must be a whole number from 0 (no limit) to 281474976710656, or off, "
            "got '-5'",
        ),
        (
            ("groups", "limit", "q", "g", "--concurrency", "of"),
            "--concurrency: must be a whole number from 0",
        ),
        (
            ("groups", "limit", "q", "g"),
            "give --concurrency, --rate, --max-size and/or --maintenance-window (the group's own limits)",
        ),
        (("groups", "limit", "q", "g", "--clear", "--concurrency", "2"), "--clear removes the group's own"),
        (("groups", "limit", "q", "a\nb", "--clear"), "argument group: group must be 1 to 128 characters"),
        (("groups", "limit", "q", "g", "--rate", "5/0s"), "DURATION of '5/0s' must be a duration from 1 ms"),
        (("groups", "list", "q", "--page-size", "0"), "argument --page-size: must be a whole number from 1"),
        (("groups", "list", "q", "--all", "--page-token", "x"), "--all reads every page from the first"),
        (("groups", "pause", "q", ""), "argument group: group must be 1 to 128 characters"),
        (("groups", "resume", "q", "a\tb"), "argument group: group must be 1 to 128 characters"),
        (("groups", "pause", "q"), "the following arguments are required: group"),
        (("add", "q", "n", "--group", "\udcff"), "argument --group: group '\\udcff' must be Unicode text"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else None,
)
async def test_bad_group_flags_are_usage_errors(
    server: RunningServer, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], says: str
) -> None:
    err = await usage_error(capsys, server, *argv)
    assert says in err, err
