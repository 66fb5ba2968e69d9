"""``qm add --dedup-mode`` against a real server on a real Valkey: what each mode's duplicate does, as the
command says it, and the flags it refuses."""

from __future__ import annotations

import json

import pytest

from tests.conftest import RunningServer
from tests.test_cli import qm_cli, qm_json, usage_error


async def test_add_with_a_dedup_mode_says_what_the_duplicate_did(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await qm_json(capsys, server, "queues", "register", "cq")
    flags = ("--dedup-key", "doc", "--dedup-ttl", "1m", "--delay", "10m", "--dedup-mode", "replace")
    first = await qm_json(capsys, server, "add", "cq", "reindex", "--data", '{"v": 1}', *flags)
    assert (first["created"], first["disposition"], first["state"]) == (True, "created", "delayed")
    assert first["options"]["dedup"]["mode"] == "replace"
    status, out, err = await qm_cli(
        capsys, "--server", server.address, "-o", "json", "add", "cq", "again", "--data", '{"v": 2}', *flags
    )
    again = json.loads(out)
    assert status == 0 and (again["id"], again["created"], again["disposition"]) == (
        first["id"],
        False,
        "replaced",
    )
    assert (again["name"], again["data"]) == ("again", {"v": 2})
    assert err == (
        f"qm add: job {first['id']!r} of queue 'cq' held --dedup-key 'doc' and had not started: it has this "
        "add's name and data now; no job was added\n"
    )
    status, out, err = await qm_cli(
        capsys, "--server", server.address, "-o", "json", "add", "cq", "x", "--dedup-key", "doc",
        "--dedup-ttl", "1m", "--dedup-mode", "extend",
    )  # fmt: skip
    assert status == 0 and json.loads(out)["disposition"] == "deduplicated"
    assert err == f"qm add: job {first['id']!r} of queue 'cq' holds --dedup-key 'doc'; nothing was added\n"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("add", "q", "n", "--dedup-mode", "replace"), "qm: error: --dedup-mode needs --dedup-key"),
        (
            ("add", "q", "n", "--dedup-key", "k", "--dedup-mode", "extend"),
            "qm: error: --dedup-mode extend restarts the ttl at each duplicate: give --dedup-ttl",
        ),
        (
            ("add", "q", "n", "--dedup-key", "k", "--dedup-mode", "latest"),
            "argument --dedup-mode: invalid choice: 'latest' (choose from ",
        ),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else None,
)
async def test_bad_dedup_mode_flags_are_usage_errors(
    server: RunningServer, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], says: str
) -> None:
    err = await usage_error(capsys, server, *argv)
    assert says in err, err
