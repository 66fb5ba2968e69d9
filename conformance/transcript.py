"""Transcripts: a worker stream's messages as lines of their kinds, and the golden files they must match.

A line is ``> kind [job]`` (worker to server) or ``< kind [job]`` (server to worker), the job named by its
name (the kit's job names: echo, sleep…). The shape of an exchange is what the protocol fixes, not what a
client library chooses, so `shape` leaves out heartbeats (extensions, their acks), stats, log lines and
every credit grant after the first (when a worker returns credits, alone or with an outcome, is its own
business), and folds repeated lines into one (three progress reports or one).
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf.message import Message as ProtoMessage

from conformance.proxy import StreamRecord

GOLDEN = Path(__file__).resolve().parent / "golden"
_CODES = {0: "OK", 5: "NOT_FOUND", 9: "FAILED_PRECONDITION"}
_COMMANDS = {1: "drain", 2: "cancel"}


def lines(record: StreamRecord) -> list[str]:
    """Every message of the stream as transcript lines (heartbeats and all)."""
    names: dict[str, str] = {}  # job id -> name, from the deliveries
    out: list[str] = []
    for m in record.messages:
        if m.end:
            out.append(f"{m.direction} end {m.end}")
        elif m.direction == ">":
            out += _request_lines(m.body, names)
        else:
            out += _response_lines(m.body, names)
    return out


def _request_lines(body: ProtoMessage | None, names: dict[str, str]) -> list[str]:
    kind = body.WhichOneof("kind") if body is not None else None
    if kind == "hello":
        return ["> hello"]
    if kind != "report":
        return [f"> {kind}"]
    r = body.report  # type: ignore[union-attr]
    out = [f"> credits {r.credits}"] if r.credits else []
    out += [f"> extension {_name(e.job_id, names)}" for e in r.extensions]
    out += [f"> progress {_name(p.lease.job_id, names)}" for p in r.progress]
    out += [f"> log {_name(g.lease.job_id, names)}" for g in r.logs]
    out += [f"> completion {_name(c.job_id, names)}" for c in r.completions]
    out += [f"> failure {_name(f.job_id, names)}" for f in r.failures]
    out += [f"> release {_name(x.job_id, names)}" for x in r.releases]
    out += [f"> abandoned {_name(x.job_id, names)}" for x in r.abandoned]
    out += [f"> cancelled {_name(x.job_id, names)}" for x in r.cancelled]
    out += [f"> parked {_name(x.job_id, names)}" for x in r.parked]
    if r.HasField("stats"):
        out.append("> stats")
    if r.stop:
        out.append("> stop")
    return out


def _response_lines(body: ProtoMessage | None, names: dict[str, str]) -> list[str]:
    kind = body.WhichOneof("kind") if body is not None else None
    if kind == "welcome":
        return ["< welcome"]
    if kind == "delivery":
        out = []
        for leased in body.delivery.jobs:  # type: ignore[union-attr]
            names[leased.job.id] = leased.job.name
            out.append(f"< delivery {leased.job.name}")
        return out
    if kind == "ack":
        ack = body.ack  # type: ignore[union-attr]
        out = []
        for result in ack.results:
            code = _CODES.get(result.code, str(result.code))
            verdict = "extended" if result.code == 0 else f"rejected {code}"
            out.append(f"< {verdict} {_name(result.lease.job_id, names)}")
        if ack.delivery_stopped:
            out.append("< delivery-stopped")
        return out
    if kind == "command":
        command = body.command  # type: ignore[union-attr]
        what = _COMMANDS.get(command.type, f"command {command.type}")
        return [f"< {what} {_name(command.job.job_id, names)}".rstrip()]
    return [f"< {kind}"]


def _name(job_id: str, names: dict[str, str]) -> str:
    return names.get(job_id, "") if job_id else ""


# Lines the protocol leaves to the client library (see the module docstring).
_NOISE = ("> extension", "< extended", "> stats", "> log")


def shape(record: StreamRecord) -> list[str]:
    """The stream's transcript as the protocol fixes it: what a golden file holds."""
    out: list[str] = []
    credited = False
    for line in lines(record):
        if line.startswith(_NOISE):
            continue
        if line.startswith("> credits"):
            if credited:
                continue
            credited, line = True, "> credits"
        if line == "< welcome" and "> hello" in out:
            # A worker may send its first credits with its hello, without waiting for the welcome: the server
            # reads them in order either way, so the welcome is shown where it answers, after the hello.
            out.insert(out.index("> hello") + 1, line)
        elif not out or out[-1] != line:
            out.append(line)
    return out


def golden(name: str) -> list[str]:
    """The golden transcript `name` (golden/<name>.txt), less its comments and blank lines."""
    text = (GOLDEN / f"{name}.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def write_golden(name: str, shape_lines: list[str], comment: str) -> Path:
    path = GOLDEN / f"{name}.txt"
    header = "".join(f"# {c}\n" for c in comment.splitlines())
    path.write_text(header + "\n".join(shape_lines) + "\n")
    return path
