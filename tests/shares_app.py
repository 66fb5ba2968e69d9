"""A QueueManager with processors for two queues, for tests that load an app by import path
(tests/test_queue_shares.py)."""

from queue_manager import JobContext, QueueManager

qm = QueueManager(address="127.0.0.1:1", concurrency=10)


@qm.processor("hi")
async def hi(job: JobContext) -> None:
    return None


@qm.processor("lo")
async def lo(job: JobContext) -> None:
    return None
