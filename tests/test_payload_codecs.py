"""Payload codecs (queue_manager/codecs.py): job data and results compressed and encrypted by the clients, the
server storing them byte for byte; the golden vectors all three clients decode (tests/codec_vectors.json),
tampering and unknown keys refused with the key id, key rotation, the compression threshold, plain payloads
passing through, and workers failing an undecodable job for good; against a real server and Valkey."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from queue_manager import (
    AesGcmCodec,
    EncodedPayload,
    GzipCodec,
    JobContext,
    JobState,
    PayloadCodecError,
    QueueManager,
    SyncQueueManager,
    codecs_from_env,
    when,
)
from queue_manager.codecs import CodecChain
from queue_manager.convert import decode_payload
from queue_manager.v1 import types_pb2
from tests.conftest import RunningServer
from tests.test_cli import qm_json
from tests.test_delay_job import until_state
from tests.test_workflows import finished

VECTORS = json.loads((Path(__file__).parent / "codec_vectors.json").read_text())
K1 = bytes(range(32))
K2 = os.urandom(32)
WAIT = 30.0


def aes(active: str = "k1", **keys: bytes) -> AesGcmCodec:
    return AesGcmCodec(keys or {"k1": K1}, active=active)


def payload(raw: bytes, content_type: str = "application/json") -> types_pb2.Payload:
    return types_pb2.Payload(raw=raw, content_type=content_type)


@pytest.fixture
async def plain(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, codecs=[], shutdown_grace=5.0)
    yield client
    await client.shutdown()


@pytest.fixture
async def sealed(server: RunningServer) -> AsyncIterator[QueueManager]:
    client = QueueManager(address=server.address, codecs=[GzipCodec(min_size=64), aes()], shutdown_grace=5.0)
    yield client
    await client.shutdown()


# ---- the wire format, without a server ---------------------------------------------------------------


def test_golden_vectors_decode_and_bad_ones_are_refused_naming_the_key() -> None:
    keys = VECTORS["keys"]
    chain = CodecChain([AesGcmCodec(keys, active="k1")])  # keys as base64 text
    for vector in VECTORS["decode"]:
        p = payload(base64.b64decode(vector["raw"]), vector["content_type"])
        chain.decode(p)
        assert (p.raw, p.content_type) == (base64.b64decode(vector["plain"]), vector["inner"]), vector["name"]
    for vector in VECTORS["refuse"]:
        with pytest.raises(PayloadCodecError, match=vector["error"]):
            chain.decode(payload(base64.b64decode(vector["raw"]), vector["content_type"]))


def test_encoding_binds_the_content_type_and_uses_a_fresh_nonce() -> None:
    chain = CodecChain([aes()])
    first, second = payload(b'{"a":1}'), payload(b'{"a":1}')
    chain.encode(first)
    chain.encode(second)
    assert first.content_type == (
        "application/vnd.qm.encoded; v=1; codecs=aes-256-gcm; kid=k1; inner=application/json"
    )
    assert first.raw[:12] != second.raw[:12] and len(first.raw) == 12 + 7 + 16
    flipped = payload(bytes([first.raw[0] ^ 1]) + first.raw[1:], first.content_type)
    with pytest.raises(PayloadCodecError, match="under key id 'k1' failed authentication"):
        chain.decode(flipped)
    relabelled = payload(first.raw, first.content_type.replace("inner=application/json", "inner=text/plain"))
    with pytest.raises(PayloadCodecError, match="'k1' failed authentication"):
        chain.decode(relabelled)
    chain.decode(first)
    assert (first.raw, first.content_type) == (b'{"a":1}', "application/json")


def test_gzip_applies_only_at_its_threshold_and_when_it_saves_bytes() -> None:
    chain = CodecChain([GzipCodec(min_size=100)])
    small, big, noise = payload(b"x" * 99), payload(b"x" * 100), payload(os.urandom(4000), "image/png")
    for p in (small, big, noise):
        chain.encode(p)
    assert (small.raw, small.content_type) == (b"x" * 99, "application/json")  # under the threshold
    assert big.content_type == "application/vnd.qm.encoded; v=1; codecs=gzip; inner=application/json"
    assert len(big.raw) < 100
    assert noise.content_type == "image/png"  # random bytes do not shrink: sent as they are
    chain.decode(big)
    assert big.raw == b"x" * 100
    # With encryption after it, a payload gzip leaves alone is still encrypted, and only that is named.
    both = CodecChain([GzipCodec(min_size=100), aes()])
    p = payload(b"x" * 50)
    both.encode(p)
    assert "codecs=aes-256-gcm;" in p.content_type


def test_a_gzip_bomb_is_refused() -> None:
    chain = CodecChain([GzipCodec(min_size=0, max_inflated=1000)])
    p = payload(b"\0" * 100_000)
    CodecChain([GzipCodec(min_size=0)]).encode(p)
    with pytest.raises(PayloadCodecError, match="more than 1,000 bytes"):
        chain.decode(p)


def test_bad_configuration_is_refused_with_what_to_fix() -> None:
    with pytest.raises(ValueError, match="key 'k1' must be 32 bytes"):
        AesGcmCodec({"k1": b"short"})
    with pytest.raises(ValueError, match="key 'k1' is not valid base64"):
        AesGcmCodec({"k1": "not base64!"})
    with pytest.raises(ValueError, match="say which is active"):
        AesGcmCodec({"k1": K1, "k2": K2})
    with pytest.raises(ValueError, match="active key id 'k3'"):
        AesGcmCodec({"k1": K1}, active="k3")
    with pytest.raises(ValueError, match="key id 'a b'"):
        AesGcmCodec({"a b": K1})
    with pytest.raises(ValueError, match="before AesGcmCodec"):
        CodecChain([aes(), GzipCodec()])
    with pytest.raises(ValueError, match="QM_CODEC_KEYS"):
        codecs_from_env({"QM_CODEC_KEYS": "k1"})
    with pytest.raises(ValueError, match="QM_CODEC_ACTIVE_KEY"):
        codecs_from_env(
            {"QM_CODEC_KEYS": f"k1:{base64.b64encode(K1).decode()},k2:{base64.b64encode(K2).decode()}"}
        )
    env = {
        "QM_CODEC_KEYS": f"k1:{base64.b64encode(K1).decode()}, k2:{base64.b64encode(K2).decode()}",
        "QM_CODEC_ACTIVE_KEY": "k2",
        "QM_CODEC_GZIP_MIN_SIZE": "512",
    }
    gz, crypt = codecs_from_env(env)
    assert isinstance(gz, GzipCodec) and gz.min_size == 512
    assert isinstance(crypt, AesGcmCodec) and crypt.active == "k2" and crypt.key_ids == ["k1", "k2"]
    assert codecs_from_env({}) == []


# ---- through a server ----------------------------------------------------------------------------------


async def test_data_and_results_are_stored_encoded_and_read_decoded(
    sealed: QueueManager, plain: QueueManager, server: RunningServer
) -> None:
    await sealed.register_queue("secrets")
    data = {"card": "4111 1111 1111 1111", "lines": ["x" * 30] * 10}
    seen: list[Any] = []

    @sealed.processor("secrets")
    async def charge(job: JobContext) -> dict[str, Any]:
        seen.append(job.data)
        return {"charged": job.data["card"][-4:], "receipt": "r" * 200}

    job = await sealed.add_job("secrets", "charge", data)
    assert job.data == data
    # What the server holds: neither the card nor JSON; a client without the keys sees what it is.
    stored = await server.app.engine.redis.hget(server.app.engine.keys("secrets").job(job.id), "data")
    assert b"4111" not in stored and b"lines" not in stored
    opaque = await plain.get_job("secrets", job.id)
    assert isinstance(opaque.data, EncodedPayload)
    assert opaque.data.codecs == ("gzip", "aes-256-gcm") and opaque.data.key_id == "k1"
    assert opaque.data.inner == "application/json"
    assert (
        str(opaque.data)
        == f"<{len(opaque.data.raw)} bytes: application/json encoded gzip+aes-256-gcm, key k1>"
    )

    await sealed.start_workers()
    done = await sealed.wait_for_job("secrets", job.id, timeout=WAIT)
    assert done.state is JobState.COMPLETED and seen == [data]
    assert done.result == {"charged": "1111", "receipt": "r" * 200}
    assert (await sealed.get_job("secrets", job.id)).result == done.result
    result = (await plain.get_job("secrets", job.id)).result
    assert isinstance(result, EncodedPayload) and result.codecs == ("gzip", "aes-256-gcm")


async def test_plain_payloads_pass_through_both_ways(sealed: QueueManager, plain: QueueManager) -> None:
    await plain.register_queue("mixed")
    old = await plain.add_job("mixed", "old", {"plain": True})
    raw = await plain.add_job("mixed", "bytes", b"\x00\xff")
    assert (await sealed.get_job("mixed", old.id)).data == {"plain": True}
    assert (await sealed.get_job("mixed", raw.id)).data == b"\x00\xff"
    # Data read without the keys goes back as it came: a retry's data, an edit's, still decodes.
    new = await sealed.add_job("mixed", "new", {"n": 1})
    copy = (await plain.get_job("mixed", new.id)).data
    assert isinstance(copy, EncodedPayload)
    await plain.update_job_data("mixed", old.id, copy)
    assert (await sealed.get_job("mixed", old.id)).data == {"n": 1}


async def test_key_rotation_reads_old_payloads_and_writes_under_the_new_key(
    server: RunningServer, plain: QueueManager
) -> None:
    await plain.register_queue("rotate")
    async with QueueManager(address=server.address, codecs=[aes()]) as before:
        old = await before.add_job("rotate", "old", {"v": 1})
    async with QueueManager(address=server.address, codecs=[aes("k2", k1=K1, k2=K2)]) as after:
        new = await after.add_job("rotate", "new", {"v": 2})
        assert (await after.get_job("rotate", old.id)).data == {"v": 1}
        assert (await after.get_job("rotate", new.id)).data == {"v": 2}
    stored = (await plain.get_job("rotate", new.id)).data
    assert isinstance(stored, EncodedPayload) and stored.key_id == "k2"
    # Once k1 is dropped, its payloads are refused with its id, not misread.
    async with QueueManager(address=server.address, codecs=[aes("k2", k2=K2)]) as retired:
        with pytest.raises(PayloadCodecError, match="key id 'k1', which this client does not hold"):
            await retired.get_job("rotate", old.id)


async def test_tampered_payload_is_refused(server: RunningServer, sealed: QueueManager) -> None:
    await sealed.register_queue("tamper")
    job = await sealed.add_job("tamper", "t", {"amount": 10})
    engine = server.app.engine
    key = engine.keys("tamper").job(job.id)
    stored = bytearray(await engine.redis.hget(key, "data"))
    stored[-1] ^= 1  # one bit of the tag
    await engine.redis.hset(key, "data", bytes(stored))
    with pytest.raises(PayloadCodecError, match="under key id 'k1' failed authentication"):
        await sealed.get_job("tamper", job.id)


async def test_worker_without_the_key_fails_the_job_for_good_naming_the_key(
    server: RunningServer, sealed: QueueManager
) -> None:
    await sealed.register_queue("wrong-key")
    job = await sealed.add_job("wrong-key", "w", {"x": 1}, {"attempts": 3})
    ran: list[str] = []
    async with QueueManager(address=server.address, codecs=[aes("k2", k2=K2)]) as other:

        @other.processor("wrong-key")
        async def run(job: JobContext) -> None:
            ran.append(job.id)

        await other.start_workers()
        failed = await until_state(sealed, "wrong-key", job.id, JobState.FAILED)
    assert ran == [] and failed.attempts_made == 1  # no retry: no attempt could read it
    assert failed.failed_reason.startswith("cannot decode the job's payload: the payload is encrypted")
    assert "key id 'k1'" in failed.failed_reason


async def test_worker_checkpoints_children_and_bulk_adds_are_encoded(
    server: RunningServer, sealed: QueueManager, plain: QueueManager
) -> None:
    await sealed.register_queue("steps")
    ids = await sealed.add_bulk("steps", [{"name": "b", "data": {"i": i}} for i in range(3)])
    for job_id in ids:
        assert isinstance((await plain.get_job("steps", job_id)).data, EncodedPayload)
        assert (await sealed.get_job("steps", job_id)).data["i"] in range(3)

    @sealed.processor("steps")
    async def step(job: JobContext) -> Any:
        if job.data.get("phase") != "two":
            await job.update_data({**job.data, "phase": "two"})
            assert job.data["phase"] == "two"
        return job.data

    await sealed.start_workers()
    for job_id in ids:
        done = await sealed.wait_for_job("steps", job_id, timeout=WAIT)
        assert done.state is JobState.COMPLETED and done.result["phase"] == "two"
        stored = (await plain.get_job("steps", job_id)).data
        assert isinstance(stored, EncodedPayload)  # the checkpoint went encoded too


async def test_workflow_steps_are_encoded_and_result_conditions_refused(
    sealed: QueueManager, plain: QueueManager
) -> None:
    await sealed.register_queue("wf")

    @sealed.processor("wf")
    async def echo(job: JobContext) -> Any:
        return {"got": job.data, "parent": job.parent.result if job.parent else None}

    await sealed.start_workers()
    flow = {
        "name": "sealed",
        "steps": [
            {
                "key": "a",
                "queue_name": "wf",
                "job_name": "a",
                "data": {"secret": 1},
                "on_success": [{"key": "b", "queue_name": "wf", "job_name": "b", "data": {"secret": 2}}],
            }
        ],
    }
    run_id = await sealed.execute_workflow(flow)
    run = await finished(sealed, run_id)
    results = {s.key: s.result for s in run.steps}
    assert results["b"] == {"got": {"secret": 2}, "parent": {"got": {"secret": 1}, "parent": None}}
    opaque = await plain.get_workflow(run_id)
    assert all(isinstance(s.result, EncodedPayload) for s in opaque.steps)

    flow["steps"][0]["on_success"][0]["run_if"] = [when("a", "got.secret", "==", 1)]  # type: ignore[index]
    with pytest.raises(ValueError, match="step 'b': run_if on a result cannot work with payload codecs"):
        await sealed.execute_workflow(flow)
    # A condition on an error reads no payload: allowed.
    flow["steps"][0]["on_success"][0]["run_if"] = [when("a", "", "contains", "x", source="error")]  # type: ignore[index]
    assert await sealed.execute_workflow(flow)


async def test_the_sync_client_and_the_cli_decode_with_keys_from_the_environment(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def produce() -> tuple[str, Any, Any]:
        with SyncQueueManager(server.address, codecs=[aes()]) as producer:
            producer.register_queue("cli")
            job = producer.add_job("cli", "c", {"hidden": "yes"})
            mine = producer.get_job("cli", job.id).data
        with SyncQueueManager(server.address) as without:
            return job.id, mine, without.get_job("cli", job.id).data

    job_id, mine, theirs = await asyncio.to_thread(produce)
    assert mine == {"hidden": "yes"} and isinstance(theirs, EncodedPayload)
    # `qm jobs get` without the keys shows what the payload is; with them in the environment, the data.
    opaque = await qm_json(capsys, server, "jobs", "get", "cli", job_id)
    assert opaque["data"]["codecs"] == ["aes-256-gcm"] and opaque["data"]["key_id"] == "k1"
    monkeypatch.setenv("QM_CODEC_KEYS", f"k1:{base64.b64encode(K1).decode()}")
    assert (await qm_json(capsys, server, "jobs", "get", "cli", job_id))["data"] == {"hidden": "yes"}


def test_the_dashboard_shows_the_codecs_and_size_of_a_payload_it_cannot_decode() -> None:
    from queue_manager_tui.format import fmt_inline, fmt_value

    p = payload(b'{"secret":1}')
    CodecChain([aes()]).encode(p)
    value = decode_payload(p)
    assert isinstance(value, EncodedPayload)
    shown = f"<{len(p.raw)} bytes: application/json encoded aes-256-gcm, key k1>"
    assert fmt_value(value) == shown and fmt_inline(value) == shown


async def test_dead_letter_copies_decode_with_the_codecs(sealed: QueueManager, plain: QueueManager) -> None:
    await sealed.register_queue("doomed")
    data = {"order": 7, "note": "n" * 100}

    @sealed.processor("doomed")
    async def fail(job: JobContext) -> None:
        raise RuntimeError("no charge")

    job = await sealed.add_job("doomed", "charge", data)
    await sealed.start_workers()
    assert (await sealed.wait_for_job("doomed", job.id, timeout=WAIT)).state is JobState.FAILED

    async def letters(client: QueueManager) -> list[Any]:
        async with asyncio.timeout(WAIT):
            while True:
                found, _ = await client.list_dead_letters()
                mine = [d for d in found if d.original_job_id == job.id]
                if mine:
                    return mine
                await asyncio.sleep(0.02)

    [letter] = await letters(sealed)
    assert (letter.original_data, letter.original_content_type) == (data, "application/json")
    [opaque] = await letters(plain)
    assert isinstance(opaque.original_data, EncodedPayload) and opaque.original_data.key_id == "k1"


async def until_copy(client: QueueManager, copy_id: str) -> Any:
    """The dead-letter copy `copy_id` once the hand-off (just after the failure) has written it."""
    async with asyncio.timeout(WAIT):
        while True:
            found, _ = await client.list_jobs("dead-letter-queue", JobState.WAITING, 1000)
            for job in found:
                if job.id == copy_id:
                    return job
            await asyncio.sleep(0.02)


async def test_every_read_of_a_dead_letter_copy_decodes_its_original(
    sealed: QueueManager, plain: QueueManager
) -> None:
    await sealed.register_queue("sunk")
    data = {"order": 8, "note": "m" * 100}

    @sealed.processor("sunk")
    async def fail(job: JobContext) -> None:
        raise RuntimeError("declined")

    job = await sealed.add_job("sunk", "charge", data)
    raw = await sealed.add_job("sunk", "blob", b"\x00secret\xff")
    await sealed.start_workers()
    copy_id, raw_copy_id = f"sunk:{job.id}", f"sunk:{raw.id}"
    listed = (await until_copy(sealed, copy_id)).data
    assert (listed["original_data"], listed["original_content_type"]) == (data, "application/json")
    assert listed["failure_reason"] == "declined" and listed["original_job_id"] == job.id

    def decoded(copy: Any) -> bool:
        return copy["original_data"] == data and copy["original_content_type"] == "application/json"

    assert decoded((await sealed.get_job("dead-letter-queue", copy_id)).data)
    [found], _ = await sealed.list_jobs("dead-letter-queue", JobState.WAITING, name="charge")
    assert decoded(found.data)
    assert decoded((await sealed.cancel_job("dead-letter-queue", copy_id)).data)
    assert decoded((await sealed.wait_for_job("dead-letter-queue", copy_id, timeout=WAIT)).data)
    assert decoded((await sealed.retry_job("dead-letter-queue", copy_id)).data)
    # Bytes come back as base64 of the plain bytes, under their own content type, as a plain original's copy.
    blob = (await until_copy(sealed, raw_copy_id)).data
    assert base64.b64decode(blob["original_data"]) == b"\x00secret\xff"
    assert blob["original_content_type"] == "application/octet-stream"
    # Without the keys the copy is as the server keeps it: the original still encoded, under its encoded type.
    opaque = (await plain.get_job("dead-letter-queue", copy_id)).data
    assert opaque["original_content_type"].startswith("application/vnd.qm.encoded; v=1;")
    assert b"order" not in base64.b64decode(opaque["original_data"])


def test_a_copy_decodes_as_a_json_value_and_as_rewritten_by_lua() -> None:
    original = payload(b'{"x":1}')
    chain = CodecChain([aes()])
    chain.encode(original)
    copy = {
        "original_queue": "q",
        "original_job_id": "1",
        "original_name": "n",
        "original_data": base64.b64encode(original.raw).decode(),
        "original_content_type": original.content_type,
    }
    as_value = types_pb2.Payload(content_type="application/json")
    as_value.json.struct_value.update(copy)
    chain.decode(as_value)
    assert decode_payload(as_value)["original_data"] == {"x": 1}
    # Lua's cjson writes "/" as "\/": the copy a redrive rewrote still decodes.
    escaped = payload(json.dumps(copy).replace("/", "\\/").encode())
    chain.decode(escaped)
    assert decode_payload(escaped)["original_data"] == {"x": 1}
    assert decode_payload(escaped)["original_content_type"] == "application/json"
    # Not a copy, or one the keys cannot open: left alone, or refused naming the key.
    other = payload(b'{"note":"vnd.qm.encoded"}')
    chain.decode(other)
    assert other.raw == b'{"note":"vnd.qm.encoded"}'
    with pytest.raises(PayloadCodecError, match="key id 'k1', which this client does not hold"):
        CodecChain([aes("k2", k2=K2)]).decode(payload(json.dumps(copy).encode()))
