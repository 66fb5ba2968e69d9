"""Recorded worker streams on disk: one JSON Lines file per stream, written by the recording proxy
(`python -m conformance.record`, or the kit's ``--save-streams``) and read back by the replay
(`python -m conformance.replay`).

The first line is a header, ``{"format": "qm-worker-stream", "version": 1, "stream": N}``; each following line
is one message as the proxy saw it: ``{"t": seconds since the stream opened, "dir": ">" or "<", "msg": the
ConnectRequest or ConnectResponse in protobuf JSON}``, or the end of a direction, ``{"t": …, "dir": …,
"end": "half-close" | "OK" | a status name}``. Protobuf JSON keeps the file readable and diffable, and any
language's protobuf library reads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from conformance.proxy import Message, StreamRecord
from queue_manager.v1 import worker_service_pb2 as pb

FORMAT = "qm-worker-stream"
VERSION = 1


class RecordingError(ValueError):
    """A file that is not a recorded worker stream (the message says where and why)."""


def save(record: StreamRecord, path: Path) -> Path:
    """Writes one stream to `path` (JSON Lines, as above) and returns it."""
    start = record.messages[0].at if record.messages else 0.0
    lines = [json.dumps({"format": FORMAT, "version": VERSION, "stream": record.number})]
    for m in record.messages:
        entry: dict[str, Any] = {"t": round(m.at - start, 6), "dir": m.direction}
        if m.end:
            entry["end"] = m.end
        else:
            assert m.body is not None
            entry["msg"] = json_format.MessageToDict(m.body, preserving_proto_field_name=True)
        lines.append(json.dumps(entry, separators=(",", ":")))
    path.write_text("\n".join(lines) + "\n")
    return path


def load(path: Path) -> StreamRecord:
    """Reads a stream `save` wrote; its messages' times are seconds since the stream opened.

    Raises:
        RecordingError: not such a file, or a line that is not a recorded message (named by its number).
    """
    rows = path.read_text().splitlines()
    try:
        header = json.loads(rows[0]) if rows else {}
    except json.JSONDecodeError:
        header = {}
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise RecordingError(
            f"{path}: not a recorded worker stream (its first line must be a {FORMAT} header)"
        )
    if header.get("version") != VERSION:
        raise RecordingError(
            f"{path}: version {header.get('version')!r} of {FORMAT}; this kit reads {VERSION}"
        )
    record = StreamRecord(int(header.get("stream", 1)))
    for number, row in enumerate(rows[1:], start=2):
        if row.strip():
            record.messages.append(_message(path, number, row))
    return record


def _message(path: Path, number: int, row: str) -> Message:
    try:
        entry = json.loads(row)
        direction = entry["dir"]
        if direction not in (">", "<"):
            raise ValueError(f"dir must be '>' or '<', not {direction!r}")
        at = float(entry["t"])
        if "end" in entry:
            return Message(at, direction, end=str(entry["end"]))
        kind = pb.ConnectRequest if direction == ">" else pb.ConnectResponse
        return Message(at, direction, json_format.ParseDict(entry["msg"], kind()))
    except (ValueError, KeyError, TypeError, json_format.ParseError) as exc:
        raise RecordingError(f"{path}, line {number}: not a recorded message ({exc})") from None
