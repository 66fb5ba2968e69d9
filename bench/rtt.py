"""`python -m bench.rtt`: what one gRPC round trip costs in Python, a unary call against a stream message.

A bare grpc.aio server (uvloop, as ours runs) in a child process and a client on loopback exchange a small
message: ``--calls`` unary calls, then as many messages written on one open bidirectional stream, each
waiting for its echo; ``--rounds`` times, interleaved. Prints the mean of each per round. No Queue Manager
code is involved: it is the floor the transport sets (bench/RESULTS.md, "The next lever: a producer
stream").
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import grpc
import grpc.aio

_ECHO = "/rtt.Rtt/Echo"
_ONE = "/rtt.Rtt/One"


def _same(b: bytes) -> bytes:
    return b


class _Handlers(grpc.GenericRpcHandler):
    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method == _ONE:
            return grpc.unary_unary_rpc_method_handler(_one, _same, _same)
        if details.method == _ECHO:
            return grpc.stream_stream_rpc_method_handler(_echo, _same, _same)
        return None


async def _one(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _echo(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request


async def _serve() -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_Handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


async def _measure(port: int, calls: int, rounds: int, size: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        one = channel.unary_unary(_ONE, _same, _same)
        stream = channel.stream_stream(_ECHO, _same, _same)()
        payload = b"x" * size
        for _ in range(200):  # warm both paths
            await one(payload)
            await stream.write(payload)
            await stream.read()
        for r in range(rounds):
            unary, streamed = [], []
            for _ in range(calls):
                t = time.perf_counter()
                await one(payload)
                unary.append(time.perf_counter() - t)
            for _ in range(calls):
                t = time.perf_counter()
                await stream.write(payload)
                await stream.read()
                streamed.append(time.perf_counter() - t)
            u, s = statistics.fmean(unary) * 1e3, statistics.fmean(streamed) * 1e3
            print(f"round {r + 1}: unary call {u:.3f} ms, stream message {s:.3f} ms ({s / u:.2f}×)")
        await stream.done_writing()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=100, help="message bytes")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import uvloop

        uvloop.run(_serve())
        return
    serve = [sys.executable, "-m", "bench.rtt", "--serve"]
    child = subprocess.Popen(serve, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        asyncio.run(_measure(port, args.calls, args.rounds, args.size))
    finally:
        child.terminate()
        child.wait(timeout=10)


if __name__ == "__main__":
    main()
