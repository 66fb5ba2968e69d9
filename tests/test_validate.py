"""The server's check of a JSON body (validate.json_bytes): RFC 8259 text in UTF-8, NaN and Infinity refused,
whitespace around the value allowed, anything after it refused, each refusal naming what is wrong; and the
HTTP API's reading of a request body."""

from __future__ import annotations

import pytest

from queue_manager_server import validate
from queue_manager_server.errors import InvalidArgument
from queue_manager_server.http.api_json import BadRequest, parse_body

ACCEPTED = [
    b'{"i": 1}',
    b' {"i": 1} ',
    b"\n[1, 2]\t",
    b'"s"',
    b"0",
    b"null",
    b'{"a": {"b": [1.5e3, "\\u00e9", false]}}',
    '"é"'.encode(),
]

REFUSED = [
    (b"", "Expecting value"),
    (b"  ", "Expecting value"),
    (b'{"i": 1} x', "Extra data"),
    (b"1 2", "Extra data"),
    (b'{"x": NaN}', "NaN is not valid JSON"),
    (b"Infinity", "Infinity is not valid JSON"),
    (b"[-Infinity]", "-Infinity is not valid JSON"),
    (b'{"a":', "Expecting value"),
    (b"{'a': 1}", "Expecting property name"),
    (b"[1,]", "Expecting value"),
    (b"\xff", "not UTF-8 text"),
    (b'\xef\xbb\xbf{"a": 1}', "byte order mark"),
    (b"[" * 5_000 + b"]" * 5_000, "too deeply"),
]


@pytest.mark.parametrize("body", ACCEPTED)
def test_json_bodies_accepted(body: bytes) -> None:
    validate.json_bytes(body, "job.data")


@pytest.mark.parametrize(("body", "why"), REFUSED, ids=[why for _, why in REFUSED])
def test_json_bodies_refused_with_the_reason(body: bytes, why: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate.json_bytes(body, "job.data")
    assert why in str(caught.value) and "job.data" in str(caught.value)


def test_an_http_body_nested_too_deeply_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="too deeply"):
        parse_body(b'{"a": ' + b"[" * 5_000 + b"]" * 5_000 + b"}")
