"""Children added at run time: what a processor passes to `JobContext.wait_for_children`, and the request
it becomes (WaitForChildren)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from queue_manager.convert import encode_payload
from queue_manager.options import JobOptionsLike, job_options_to_proto, validate_job_name, validate_queue_name
from queue_manager.v1 import jobs_pb2

__all__ = ["ChildSpec", "ChildSpecLike", "wait_for_children_request"]

# A value no caller passes: keep the job's data.
KEEP: Any = object()


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """A child job for a running job to add, as `QueueManager.add_job` takes one.

    Attributes:
        queue_name: Queue of the child (any registered queue).
        name: Job name.
        data: Job data (JSON-serialisable or bytes).
        options: Job options, as for `QueueManager.add_job`. Without ``job_id`` or ``dedup`` the child's id
            is derived from its parent's. With ``job_id`` the child is the job of that id in its queue: added
            if none exists, else the existing one (already finished, it counts at once). With ``dedup`` it is
            the job the key resolves to (this one, or the key's holder).
    """

    queue_name: str
    name: str
    data: Any = None
    options: JobOptionsLike | None = None


ChildSpecLike: TypeAlias = ChildSpec | Mapping[str, Any]
"""A `ChildSpec` or a mapping with keys ``queue_name``, ``name``, ``data`` and ``options``."""

_KEYS = frozenset({"queue_name", "name", "data", "options"})


def wait_for_children_request(
    queue_name: str, job_id: str, lease_token: str, children: Iterable[ChildSpecLike], data: Any = KEEP
) -> jobs_pb2.WaitForChildrenRequest:
    """Builds and checks a WaitForChildrenRequest (the server checks the rest: queues, limits, sizes)."""
    if isinstance(children, Mapping | ChildSpec | str | bytes):
        raise TypeError("children must be a list of ChildSpec or dicts, not one " + type(children).__name__)
    request = jobs_pb2.WaitForChildrenRequest(queue_name=queue_name, job_id=job_id, lease_token=lease_token)
    for i, child in enumerate(children):
        spec = child if isinstance(child, ChildSpec) else _spec(child, i)
        msg = request.children.add(
            queue_name=validate_queue_name(spec.queue_name), name=validate_job_name(spec.name)
        )
        encode_payload(spec.data, msg.data)
        if spec.options is not None:
            job_options_to_proto(spec.options, into=msg.options)
    if data is not KEEP:
        encode_payload(data, request.data)
    return request


def _spec(item: object, index: int) -> ChildSpec:
    if not isinstance(item, Mapping):
        raise TypeError(f"child {index}: must be a ChildSpec or a mapping, not {type(item).__name__}")
    unknown = [key for key in item if key not in _KEYS]
    if unknown:
        raise ValueError(
            f"child {index}: unknown key {', '.join(map(repr, unknown))}; expected queue_name, name, data, "
            "options"
        )
    for key in ("queue_name", "name"):
        if key not in item:
            raise ValueError(f"child {index}: {key!r} is required")
    return ChildSpec(item["queue_name"], item["name"], item.get("data"), item.get("options"))
