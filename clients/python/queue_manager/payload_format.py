"""The wire format of encoded payloads (compressed, encrypted or both), the same in the Python, TypeScript and
Go clients (docs/security.md, "Compressing and encrypting payloads").

An encoded payload is raw bytes whose content type names what was done to them, in order, and what they were:

    application/vnd.qm.encoded; v=1; codecs=gzip,aes-256-gcm; kid=k1; inner=application/json

``v`` is the format's version; ``codecs`` lists the codecs in the order they were applied (decoding undoes
them from the last); ``kid`` names the key of an encrypting codec, and is there only with one; ``inner`` is
the content type the payload had before, and always comes last, so that it may hold ``;`` and ``=`` itself
(``inner=application/json; charset=utf-8``). The server stores the whole string with the bytes and never
reads either, so this module is all there is to the format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ENCODED_TYPE", "EncodedPayload", "PayloadFormatError", "build_content_type", "parse_content_type"]

ENCODED_TYPE = "application/vnd.qm.encoded"
FORMAT_VERSION = "1"
GZIP = "gzip"
AES_256_GCM = "aes-256-gcm"
CODEC_NAMES = (GZIP, AES_256_GCM)
# The server refuses a content type over 200 characters (its `payload.content_type` limit).
MAX_CONTENT_TYPE = 200
# Key ids travel in the content type: short, and free of the characters that separate its parameters.
KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PREFIX = ENCODED_TYPE + ";"
_INNER = "; inner="


class PayloadFormatError(ValueError):
    """A content type that says it is an encoded payload but cannot be read as one."""


@dataclass(frozen=True, slots=True)
class EncodedPayload:
    """A payload this client could not decode (it has no codecs): the bytes and what the content type says.

    Sent again as data (a retry's, an edit's), it goes as it is, content type and all, so data read without
    the keys can still be handed on.

    Attributes:
        content_type: The whole content type, ``application/vnd.qm.encoded; ...``.
        raw: The encoded bytes.
        codecs: The codecs applied, in order (``("gzip", "aes-256-gcm")``).
        key_id: The key id of the encryption ("" when not encrypted).
        inner: The content type before encoding.
    """

    content_type: str
    raw: bytes
    codecs: tuple[str, ...]
    key_id: str
    inner: str

    def __str__(self) -> str:
        key = f", key {self.key_id}" if self.key_id else ""
        return f"<{len(self.raw):,} bytes: {self.inner} encoded {'+'.join(self.codecs)}{key}>"


def is_encoded(content_type: str) -> bool:
    """Whether a content type marks an encoded payload."""
    return content_type.startswith(_PREFIX)


def build_content_type(codecs: list[str], key_id: str, inner: str) -> str:
    """The content type of a payload encoded by `codecs` (in the order applied), under `key_id` if any.

    Raises:
        ValueError: The result would be longer than the server takes (a long inner content type or key id).
    """
    key = f"; kid={key_id}" if key_id else ""
    content_type = f"{ENCODED_TYPE}; v={FORMAT_VERSION}; codecs={','.join(codecs)}{key}{_INNER}{inner}"
    if len(content_type) > MAX_CONTENT_TYPE:
        raise ValueError(
            f"the encoded payload's content type would be {len(content_type)} characters, over the server's "
            f"{MAX_CONTENT_TYPE}: shorten the key id or the content type {inner!r}"
        )
    return content_type


def parse_content_type(content_type: str) -> tuple[list[str], str, str]:
    """Reads an encoded payload's content type: (codecs in the order applied, key id or "", inner type).

    Raises:
        PayloadFormatError: It is not a version-1 encoded content type, names an unknown codec, or lacks a
            key id for its encryption (or has one without).
    """
    head, sep, inner = content_type[len(_PREFIX) :].partition(_INNER)
    if not is_encoded(content_type) or not sep:
        raise PayloadFormatError(f"{content_type!r} is not an encoded payload's content type (no inner=)")
    params: dict[str, str] = {}
    for part in head.split(";"):
        name, eq, value = part.strip().partition("=")
        if not eq or name in params:
            raise PayloadFormatError(f"the encoded payload's content type {content_type!r} is malformed")
        params[name] = value
    if params.get("v") != FORMAT_VERSION:
        raise PayloadFormatError(
            f"the payload is encoded in format v={params.get('v', '?')}; this client reads "
            f"v={FORMAT_VERSION} (upgrade it)"
        )
    codecs = params.get("codecs", "").split(",")
    unknown = [c for c in codecs if c not in CODEC_NAMES]
    if unknown or len(set(codecs)) != len(codecs):
        raise PayloadFormatError(
            f"the payload names codecs this client does not know: {params.get('codecs')!r}"
        )
    key_id = params.get("kid", "")
    if (AES_256_GCM in codecs) != bool(key_id) or (key_id and not KEY_ID.fullmatch(key_id)):
        raise PayloadFormatError(f"the encoded payload's key id is missing or malformed in {content_type!r}")
    if set(params) - {"v", "codecs", "kid"}:
        raise PayloadFormatError(
            f"the encoded payload's content type {content_type!r} has unknown parameters"
        )
    return codecs, key_id, inner


def encoded_payload(content_type: str, raw: bytes) -> EncodedPayload | bytes:
    """An undecoded payload as an `EncodedPayload`; its bytes alone when its content type cannot be read."""
    try:
        codecs, key_id, inner = parse_content_type(content_type)
    except PayloadFormatError:
        return raw
    return EncodedPayload(content_type, raw, tuple(codecs), key_id, inner)
