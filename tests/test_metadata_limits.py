"""Merged metadata stays within the limits a job's own is held to (100 tags, 100 attributes, 16 KiB): the
job's own is kept whole, and what it inherits (its queue's default, a chain predecessor's or a workflow
run's attributes) fills the room left in a documented order, so inherited metadata never makes an add fail
(docs/api.md, docs/flows.md)."""

from __future__ import annotations

import asyncio

from queue_manager import JobContext, JobMetadata, QueueManager
from queue_manager.v1 import types_pb2
from tests.conftest import RunningServer

WAIT = 20.0
MAX_BYTES = 16 * 1024
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _keys(prefix: str, n: int) -> dict[str, str]:
    return {f"{prefix}{i:03}": "v" for i in range(n)}


def _encoded_size(md: JobMetadata) -> int:
    return types_pb2.JobMetadata(
        correlation_id=md.correlation_id, tags=md.tags, attributes=md.attributes
    ).ByteSize()


async def test_a_queues_default_metadata_fills_only_the_room_a_jobs_own_leaves(server: RunningServer) -> None:
    """The default's correlation id (the job has none), then its tags, then its attributes by key, as far
    as the limits allow; the add is never refused for them, however it is made."""
    default = {"correlation_id": "from-queue", "tags": ["q1", "q2", "q3"], "attributes": _keys("d", 30)}
    own = {"tags": [f"t{i}" for i in range(98)], "attributes": {**_keys("j", 90), "d000": "mine"}}
    async with QueueManager(address=server.address) as client:
        await client.register_queue("meta", default_job_options={"metadata": default})
        answered = await client.add_job("meta", "one", None, {"metadata": own})
        [bulk_id] = await client.add_bulk("meta", [{"name": "bulk", "options": {"metadata": own}}])
        small = await client.add_job("meta", "small", None, {"metadata": {"attributes": {"j": "1"}}})
        for job_id in (answered.id, bulk_id):
            md = (await client.get_job("meta", job_id)).metadata
            assert md.correlation_id == "from-queue"
            assert md.tags == ["q1", "q2", *own["tags"]]  # 98 of its own leave room for 2
            # 91 of its own (d000 among them, its value kept) leave room for 9: d001 to d009, by key.
            assert md.attributes == {**own["attributes"], **_keys("d", 10), "d000": "mine"}
        assert answered.metadata.attributes == md.attributes and answered.metadata.tags == md.tags
        # Under the limits the merge is what it was: everything of both.
        md = (await client.get_job("meta", small.id)).metadata
        assert md.attributes == {**default["attributes"], "j": "1"} and md.tags == default["tags"]


async def test_a_queues_default_metadata_is_cut_at_the_size_limit(server: RunningServer) -> None:
    default = {"attributes": {f"d{i}": "x" * 1_500 for i in range(8)}}  # ~12 KiB
    own = {"attributes": {f"j{i}": "y" * 1_500 for i in range(7)}}  # ~10.6 KiB: room for 3 of the default
    async with QueueManager(address=server.address) as client:
        await client.register_queue("big", default_job_options={"metadata": default})
        job = await client.add_job("big", "one", None, {"metadata": own})
        md = (await client.get_job("big", job.id)).metadata
        assert {k: v for k, v in md.attributes.items() if k.startswith("j")} == own["attributes"]
        assert sorted(k for k in md.attributes if k.startswith("d")) == ["d0", "d1", "d2"]
        assert _encoded_size(md) <= MAX_BYTES


async def test_a_chain_link_is_added_with_its_own_metadata_and_what_room_is_left_of_the_inherited(
    server: RunningServer,
) -> None:
    """A chain's next link must never fail to be added for what it inherits: its predecessor's
    attributes (the trace context first, then by key) and its queue's default are trimmed, its own kept."""
    inherited = {"traceparent": TRACEPARENT, "tracestate": "vendor=1", **_keys("p", 98)}
    link_own = _keys("l", 50)
    seen: list[JobMetadata] = []
    done = asyncio.Event()
    async with QueueManager(address=server.address) as client:
        await client.register_queue("first")
        await client.register_queue(
            "next", default_job_options={"metadata": {"attributes": {"zz-default": "q"}}}
        )

        @client.processor("first")
        async def first(job: JobContext) -> str:
            return "ok"

        @client.processor("next")
        async def link(job: JobContext) -> None:
            seen.append(job.metadata)
            done.set()

        chain = [
            {"queue_name": "next", "job_name": "link", "options": {"metadata": {"attributes": link_own}}}
        ]
        root = await client.add_job(
            "first", "root", None, {"metadata": {"attributes": inherited}, "chain_to": chain}
        )
        await client.start_workers()
        async with asyncio.timeout(WAIT):
            await done.wait()
        [md] = seen
        # 50 of its own, the trace context, then 48 of the predecessor's by key; no room for the default.
        assert md.attributes == {
            **link_own,
            "traceparent": TRACEPARENT,
            "tracestate": "vendor=1",
            **_keys("p", 48),
        }
        assert (await client.get_job("first", root.id)).chain_failure == ""


async def test_a_workflow_steps_job_keeps_its_own_attributes_and_what_fits_of_the_runs(
    server: RunningServer,
) -> None:
    run_attributes = {f"r{i:03}": "x" * 200 for i in range(70)}  # ~14.8 KiB
    step_own = {"attributes": {f"s{i:03}": "y" * 200 for i in range(40)}}  # ~8.4 KiB: room for ~37
    async with QueueManager(address=server.address) as client:
        await client.register_queue("steps")
        step = {"key": "a", "queue_name": "steps", "job_name": "work", "options": {"metadata": step_own}}
        run_id = await client.execute_workflow({"steps": [step], "metadata": {"attributes": run_attributes}})
        run = await client.get_workflow(run_id)
        md = (await client.get_job("steps", run.step("a").job_id)).metadata
        assert {k: v for k, v in md.attributes.items() if k.startswith("s")} == step_own["attributes"]
        # By key, as many as fit: the next one would pass the size limit.
        taken = sorted(k for k in md.attributes if k.startswith("r"))
        assert taken == sorted(run_attributes)[: len(taken)] and 30 < len(taken) < 40
        size, after = _encoded_size(md), sorted(run_attributes)[len(taken)]
        assert size <= MAX_BYTES < size + types_pb2.JobMetadata(attributes={after: "x" * 200}).ByteSize()
