"""Every Payload in a protobuf message, however deep (codecs.py encodes and decodes them in place): the
walk visits only the fields through which a Payload can be reached, found once per message type."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from queue_manager.v1 import types_pb2

__all__ = ["walk_payloads"]

_PAYLOAD = types_pb2.Payload.DESCRIPTOR.full_name

# How a field holds its messages: one (set or not), a repeated field's list, or a map's values.
_ONE, _LIST, _MAP = 0, 1, 2


def walk_payloads(message: Message, fn: Callable[[types_pb2.Payload], None]) -> None:
    """Calls `fn` on every Payload in `message`, visiting only the fields that can hold one."""
    for name, shape, is_payload in _payload_fields(message.DESCRIPTOR):
        value: Any = getattr(message, name)
        if shape == _MAP:
            items = value.values()
        elif shape == _LIST:
            items = value
        elif message.HasField(name):
            items = (value,)
        else:
            continue
        for item in items:
            if is_payload:
                fn(item)
            else:
                walk_payloads(item, fn)


@functools.cache
def _payload_fields(descriptor: Descriptor) -> tuple[tuple[str, int, bool], ...]:
    """The fields of a message type through which a Payload can be reached: (name, shape, is a Payload)."""
    out = []
    for field in descriptor.fields:
        held = _held_type(field)
        if held is not None and _reaches_payload(held, frozenset()):
            entry = field.message_type is not None and field.message_type.GetOptions().map_entry
            shape = _MAP if entry else _LIST if field.is_repeated else _ONE
            out.append((field.name, shape, held.full_name == _PAYLOAD))
    return tuple(out)


def _held_type(field: FieldDescriptor) -> Descriptor | None:
    """The message type a field holds (a map's value type for a map field); None for scalars."""
    held = field.message_type
    if held is not None and held.GetOptions().map_entry:
        return held.fields_by_name["value"].message_type
    return held


def _reaches_payload(descriptor: Descriptor, seen: frozenset[str]) -> bool:
    if descriptor.full_name == _PAYLOAD:
        return True
    if descriptor.full_name in seen or descriptor.full_name.startswith("google.protobuf."):
        return False
    seen = seen | {descriptor.full_name}
    return any(
        held is not None and _reaches_payload(held, seen) for held in map(_held_type, descriptor.fields)
    )
