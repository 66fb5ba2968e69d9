"""Runs the conformance kit against one worker: ``python -m conformance --worker "COMMAND"``.

Exit status 0 when every scenario passed; each scenario's verdict is printed as it ends. ``--record`` writes
the golden transcripts from this worker's streams instead of checking them (for a deliberate change of the
protocol; review the diff). ``--save-streams DIR`` writes every stream of every scenario, both sides in full,
to ``DIR/<scenario>-<n>.jsonl`` (recording.py), for ``python -m conformance.replay``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path

from conformance import transcript
from conformance.harness import Kit
from conformance.recording import save
from conformance.scenarios import GOLDEN_SCENARIOS, SCENARIOS


async def run(
    worker: str, only: list[str], record: bool, concurrency: int, save_streams: Path | None = None
) -> list[tuple[str, str]]:
    """Runs the scenarios; returns (name, "" or why it failed) for each."""
    verdicts: list[tuple[str, str]] = []
    async with Kit(worker, concurrency) as kit:
        for name, scenario in SCENARIOS.items():
            if only and name not in only:
                continue
            started = time.monotonic()
            first = len(kit.proxy.streams)
            why = ""
            try:
                stream = await scenario(kit, f"conformance-{name.replace('_', '-')}")
                if name in GOLDEN_SCENARIOS and stream is not None:
                    why = _check_golden(GOLDEN_SCENARIOS[name], transcript.shape(stream), record)
            except AssertionError as exc:
                why = str(exc) or repr(exc)
                if kit.workers and "worker's output" not in why:
                    why += kit.workers[-1].tail()
            if save_streams is not None:
                for n, stream in enumerate(kit.proxy.streams[first:], start=1):
                    save(stream, save_streams / f"{name}-{n}.jsonl")
            verdicts.append((name, why))
            took = time.monotonic() - started
            print(
                f"{'PASS' if not why else 'FAIL'} {name} ({took:.1f} s){': ' + why if why else ''}",
                flush=True,
            )
    return verdicts


def _check_golden(name: str, shape: list[str], record: bool) -> str:
    if record:
        transcript.write_golden(name, shape, f"Golden transcript {name!r}, recorded (conformance/README.md).")
        return ""
    try:
        want = transcript.golden(name)
    except FileNotFoundError:
        return f"golden/{name}.txt is missing: record it with --record from a worker known to be right"
    if shape == want:
        return ""
    return (
        f"the stream's shape differs from golden/{name}.txt:\n  want: "
        + "\n        ".join(want)
        + "\n  got:  "
        + "\n        ".join(shape)
    )


# The most jobs a worker runs at once in the Python, TypeScript and Go clients (their workers refuse more).
MAX_CONCURRENCY = 100_000


def _concurrency(text: str) -> int:
    """An argparse ``type``: a worker's concurrency, refused here rather than by every scenario failing."""
    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(
            f"must be a whole number from 1 to {MAX_CONCURRENCY:,}, got {text!r}"
        )
    return int(text)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__)
    parser.add_argument("--worker", required=True, help="the command that starts the worker under test")
    parser.add_argument("--only", action="append", default=[], choices=sorted(SCENARIOS), help="run this one")
    parser.add_argument(
        "--concurrency",
        type=_concurrency,
        default=2,
        help=f"QM_CONFORMANCE_CONCURRENCY, 1 to {MAX_CONCURRENCY:,} (default 2)",
    )
    parser.add_argument("--record", action="store_true", help="write the golden transcripts from this worker")
    parser.add_argument(
        "--save-streams",
        type=Path,
        metavar="DIR",
        help="write each scenario's streams in full to DIR/<scenario>-<n>.jsonl, for conformance.replay",
    )
    args = parser.parse_args()
    if args.save_streams is not None:
        args.save_streams.mkdir(parents=True, exist_ok=True)
    # The in-process server's own warnings (a job failed for good, Valkey without persistence) are the
    # scenarios' doing: only its errors are shown.
    logging.basicConfig(level=logging.ERROR)
    verdicts = asyncio.run(run(args.worker, args.only, args.record, args.concurrency, args.save_streams))
    failed = [name for name, why in verdicts if why]
    names = f": {', '.join(failed)}" if failed else ""
    print(f"{len(verdicts) - len(failed)} passed, {len(failed)} failed{names}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
