"""Protobuf JSON in and out of the HTTP API: request messages from path, query and body; error bodies.

A request message is built from three places, in this order of precedence: the path parameters (always
win; a body that names the same field with another value is refused), then the JSON body (POST and PUT)
or the query string (GET and DELETE). The body is the RPC's request message in protobuf JSON, parsed by
`google.protobuf.json_format` (field names as in the .proto or in lowerCamelCase). Responses are the RPC's
response message in protobuf JSON with the .proto field names, every field present (zeros too), enums by
name, 64-bit integers as strings (as protobuf JSON says, so JavaScript loses no digits).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, NoReturn, cast

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from multidict import MultiMapping

JSON_TYPE = "application/json"


class BadRequest(Exception):
    """The HTTP request cannot become a request message (INVALID_ARGUMENT, 400); the message says why."""


def error_response(status: int, code: str, message: str, **headers: str) -> web.Response:
    """The API's one error shape: ``{"code": "NOT_FOUND", "message": "..."}``."""
    body = json.dumps({"code": code, "message": message}, ensure_ascii=False)
    return web.Response(status=status, text=body, content_type=JSON_TYPE, headers=headers)


def message_response(message: Message, status: int = 200) -> web.Response:
    body = json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )
    return web.Response(
        status=status, text=json.dumps(_whole_numbers(body), ensure_ascii=False), content_type=JSON_TYPE
    )


# Beyond 2^53 a double no longer holds every integer, so a larger one stays as the double it is.
_MAX_EXACT_INT = 2**53


def _whole_numbers(value: Any) -> Any:
    """A response with every whole double written as an integer (``2``, not ``2.0``), as the other protobuf
    JSON printers (C++, Go, Java) write it: JSON job data travels as a google.protobuf.Value, whose numbers
    are doubles, so without this ``{"n": 3}`` came back as ``{"n": 3.0}``, a float to a Python reader."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < _MAX_EXACT_INT else value
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body; an empty body is ``{}``."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw.decode("utf-8"))  # decoded here: json.loads would guess UTF-16 or -32 too
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the request body is not UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("the request body nests arrays and objects too deeply to read") from None
    if not isinstance(value, dict):
        raise BadRequest(f"the request body must be a JSON object, not {type(value).__name__}")
    return value


def build_request(
    cls: type[Message],
    path: Mapping[str, str],
    body: dict[str, Any] | None,
    query: MultiMapping[str] | None,
) -> Message:
    """The request message: path parameters over the body (or the query string).

    Raises:
        BadRequest: A field that does not exist, a value of the wrong type, a path conflict.
    """
    descriptor = cast(Descriptor, cls.DESCRIPTOR)  # the upb class, typed as the Python one
    fields = _check_body(descriptor, dict(body)) if body is not None else _from_query(descriptor, query or {})
    for name, value in path.items():
        field = descriptor.fields_by_name[name]
        for key in {field.name, field.json_name}:
            given = fields.pop(key, value)
            if given != value:
                raise BadRequest(f"{name} is {given!r} in the body but {value!r} in the path")
        fields[name] = value
    try:
        return json_format.ParseDict(fields, cls())
    except json_format.ParseError as exc:
        raise BadRequest(" ".join(str(exc).split())) from None


def _from_query(descriptor: Descriptor, query: Mapping[str, str] | MultiMapping[str]) -> dict[str, Any]:
    """Query parameters as protobuf JSON values, typed by the request message's scalar fields; a field of a
    message field is named with a dot (``filter.name=send-*``)."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(query):
        field, into = _query_field(descriptor, key, out)
        values = query.getall(key) if isinstance(query, MultiMapping) else [query[key]]
        converted = [_scalar(field, key, v) for v in values]
        if field.is_repeated:
            into[field.name] = converted
        elif len(converted) > 1:
            raise BadRequest(f"query parameter {key!r} is given {len(converted)} times")
        else:
            into[field.name] = converted[0]
    return out


def _query_field(
    descriptor: Descriptor, key: str, out: dict[str, Any]
) -> tuple[FieldDescriptor, dict[str, Any]]:
    """The scalar field a query parameter names, and the dict of `out` its value goes in."""
    *parents, last = key.split(".")
    into, at = out, descriptor
    for name in parents:
        field = _by_name(at).get(name)
        if field is None or field.message_type is None or _is_scalar_message(field) or field.is_repeated:
            _unknown(descriptor, key)
        into = into.setdefault(field.name, {})
        at = field.message_type
    field = _by_name(at).get(last)
    if field is None or (field.type == FieldDescriptor.TYPE_MESSAGE and not _is_scalar_message(field)):
        _unknown(descriptor, key)
    return field, into


def _by_name(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    return {f.name: f for f in descriptor.fields} | {f.json_name: f for f in descriptor.fields}


def _unknown(descriptor: Descriptor, key: str) -> NoReturn:
    def takes(f: FieldDescriptor) -> bool:
        return f.type != FieldDescriptor.TYPE_MESSAGE or _is_scalar_message(f)

    accepted = [f.name for f in descriptor.fields if takes(f)]
    accepted += [
        f"{f.name}.{g.name}"
        for f in descriptor.fields
        if f.message_type is not None and not takes(f) and not f.is_repeated
        for g in f.message_type.fields
        if takes(g)
    ]
    raise BadRequest(f"unknown query parameter {key!r}; this route takes: {', '.join(accepted) or 'none'}")


def _scalar(field: FieldDescriptor, key: str, text: str) -> Any:
    """One query value as the JSON value json_format expects for the field."""
    if field.type == FieldDescriptor.TYPE_BOOL:
        if text.lower() in ("true", "1", ""):
            return True
        if text.lower() in ("false", "0"):
            return False
        raise BadRequest(f"query parameter {key!r} must be true or false, not {text!r}")
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return _enum_name(field.enum_type, key, text)
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        try:
            return float(text)
        except ValueError:
            raise BadRequest(f"query parameter {key!r} must be a number, not {text!r}") from None
    if field.cpp_type in _INTEGER_TYPES:
        try:
            return int(text)
        except ValueError:
            raise BadRequest(f"query parameter {key!r} must be an integer, not {text!r}") from None
    return text  # strings, durations ("1.5s") and times (RFC 3339) which json_format parses


def _enum_name(enum: EnumDescriptor, key: str, text: str, what: str = "query parameter") -> str:
    """An enum value by its full name (JOB_STATE_FAILED) or its short one (failed), any case."""
    prefix = "".join("_" + c if c.isupper() else c.upper() for c in enum.name).lstrip("_") + "_"
    wanted = text.upper()
    for value in enum.values:
        if value.number and value.name in (wanted, prefix + wanted):
            return value.name
    names = ", ".join(v.name.removeprefix(prefix).lower() for v in enum.values if v.number)
    raise BadRequest(f"{what} {key!r} must be one of {names}, not {text!r}")


def _check_body(descriptor: Descriptor, body: dict[str, Any], path: str = "") -> dict[str, Any]:
    """A JSON body as json_format reads it, or BadRequest for what json_format would misread.

    A short enum name ("quiet", "failed") becomes the full one, as query parameters take them; an unknown
    name is refused with the names allowed. Numbers and full names pass as they are; google.protobuf values
    (JSON payloads, times) are left alone. A message field given a string or a number is refused by name
    (json_format would iterate the string and name its first letter as an unknown field), and so is bytes
    text that is not base64 (json_format decodes it leniently, so ``{"raw": "!!!"}`` was stored as no
    bytes at all)."""
    fields = _by_name(descriptor)
    for key, value in body.items():
        field = fields.get(key)
        if field is None:
            continue  # json_format names what is unknown
        where = f"{path}{field.name}"
        if field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
            enum = field.enum_type
            if isinstance(value, str):
                body[key] = _enum_name(enum, where, value, "field")
            elif isinstance(value, list):
                body[key] = [_enum_name(enum, where, v, "field") if isinstance(v, str) else v for v in value]
        elif field.type == FieldDescriptor.TYPE_BYTES:
            for text in value if isinstance(value, list) else [value]:
                _check_base64(where, text)
        elif (message := field.message_type) is not None:
            if message.full_name.startswith("google.protobuf.") or message.GetOptions().map_entry:
                continue
            if field.is_repeated and isinstance(value, list):
                body[key] = [_message_value(message, f"{where}[{i}]", v) for i, v in enumerate(value)]
            else:
                body[key] = _message_value(message, where, value)
    return body


def _message_value(message: Descriptor, where: str, value: Any) -> Any:
    """One value of a message field: an object, checked inside, or null (json_format clears the field)."""
    if value is None:
        return value
    if not isinstance(value, dict):
        shape = _SHAPES.get(message.full_name, f"a {message.name} object (docs/api.md)")
        raise BadRequest(f"field {where!r} must be {shape}, not {json.dumps(value)[:60]}")
    return _check_body(message, dict(value), where + ".")


# How the messages people most often get wrong are written, for the refusal of anything else.
_SHAPES = {
    "queue_manager.v1.Payload": 'a Payload object: {"json": <any JSON value>} or {"raw": "<base64>"}',
}

# Base64 as protobuf JSON takes it: the standard or the URL-safe alphabet, with or without padding.
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")


def _check_base64(where: str, text: Any) -> None:
    if not isinstance(text, str):
        return  # json_format names the wrong type
    digits = text.rstrip("=")  # json_format pads what is short of it
    if not _BASE64.fullmatch(text) or len(digits) % 4 == 1:
        raise BadRequest(f"field {where!r} must be base64 (standard or URL-safe), not {text[:60]!r}")


# Messages whose protobuf JSON is one string, so a query parameter can carry them.
_SCALAR_MESSAGES = frozenset({"google.protobuf.Duration", "google.protobuf.Timestamp"})


def _is_scalar_message(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.full_name in _SCALAR_MESSAGES


_INTEGER_TYPES = {
    FieldDescriptor.CPPTYPE_INT32,
    FieldDescriptor.CPPTYPE_INT64,
    FieldDescriptor.CPPTYPE_UINT32,
    FieldDescriptor.CPPTYPE_UINT64,
}
