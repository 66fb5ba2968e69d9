"""Records worker streams for replay: ``python -m conformance.record --upstream HOST:PORT --out DIR``.

A loopback proxy (proxy.py) in front of a real server: point workers at the address it prints (its first
line on stdout) instead of the server's. Every call passes through unchanged; each worker stream is written,
once it ends, to ``DIR/stream-N.jsonl`` (recording.py), ready for ``python -m conformance.replay``. SIGTERM
or Ctrl-C stops it (streams still open are written then). Plaintext gRPC on both sides: for a test or a
staging server, not a production one behind TLS.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from conformance.proxy import Proxy, StreamRecord
from conformance.recording import save


async def record(upstream: str, out: Path, listen: str) -> None:
    """Proxies to `upstream` on `listen`, writing each worker stream to `out` (made by the caller) as it
    ends, until SIGTERM or SIGINT."""
    saved: set[int] = set()

    def write(stream: StreamRecord) -> None:
        if stream.number not in saved and stream.messages:
            saved.add(stream.number)
            path = save(stream, out / f"stream-{stream.number}.jsonl")
            print(f"recorded {path} ({len(stream.messages)} messages)", file=sys.stderr, flush=True)

    proxy = Proxy(upstream, listen)
    proxy.on_stream_end = write
    await proxy.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(proxy.address, flush=True)
    print(f"recording worker streams to {out}: point workers at {proxy.address}", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        for stream in proxy.streams:  # those still open
            write(stream)
        await proxy.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conformance.record", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the server (plaintext gRPC)")
    parser.add_argument("--out", required=True, type=Path, help="directory for the stream-N.jsonl files")
    parser.add_argument(
        "--listen", default="127.0.0.1:0", help="HOST:PORT to listen on (default: a free port)"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(record(args.upstream, args.out, args.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
