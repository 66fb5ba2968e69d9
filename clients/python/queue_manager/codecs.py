"""Client-side payload codecs: job data and results compressed (gzip) and encrypted (AES-256-GCM) before they
leave this process, and decoded when they come back; the server stores them byte for byte.

A client made with codecs encodes every payload it sends (the data of adds, bulk adds, workflow steps,
schedules, retries, redrives and data updates; a worker's results, checkpoints and children) and decodes every
payload it reads (jobs, results, parents' and children's outcomes, workflow steps). A payload that is not
encoded passes through either way, so producers with and without codecs can share a queue. The wire format is
in payload_format.py and docs/security.md.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import os
import zlib
from collections.abc import Iterable, Mapping, Sequence

import grpc
from google.protobuf.message import Message

from queue_manager.convert import (
    JSON_CONTENT_TYPE,
    OCTET_STREAM,
    python_to_value,
    value_json,
    value_to_python,
)
from queue_manager.errors import QueueManagerError
from queue_manager.payload_format import (
    AES_256_GCM,
    GZIP,
    KEY_ID,
    PayloadFormatError,
    build_content_type,
    is_encoded,
    parse_content_type,
)
from queue_manager.payload_walk import walk_payloads
from queue_manager.v1 import types_pb2, workflows_pb2

__all__ = ["AesGcmCodec", "CodecChain", "GzipCodec", "PayloadCodec", "PayloadCodecError", "codecs_from_env"]

KEY_SIZE = 32  # AES-256
NONCE_SIZE = 12  # 96 bits, GCM's own size: a random one per payload
TAG_SIZE = 16
# Most bytes a gzip body may inflate to: the server caps a payload's size, but not what it inflates to.
DEFAULT_MAX_INFLATED = 64 * 1024 * 1024
# Bytes every JSON body holding an encoded payload's content type contains (the server's JSON of a dead-letter
# copy writes it whole, a Lua rewrite of the copy as "application\/vnd..."): a cheap test that spares the
# parse of every other JSON payload read.
_ENCODED_MARK = b"vnd.qm.encoded"


class PayloadCodecError(QueueManagerError, ValueError):
    """A payload that cannot be decoded: under a key id this client does not hold, altered since it was
    encoded (authentication failed), or not a readable encoded payload. The message names the key id.

    The call itself succeeded; the error is a `QueueManagerError` (code ``DATA_LOSS``: this client cannot
    read what the server holds) so that code handling the client's errors, the CLI's and the dashboard's,
    shows it as one.
    """

    default_code = grpc.StatusCode.DATA_LOSS


class GzipCodec:
    """Compresses payloads of at least ``min_size`` bytes with gzip, when that makes them smaller.

    Args:
        min_size: Smallest body compressed, in bytes (at least 0); smaller ones go as they are.
        max_inflated: Most bytes a body may inflate to when read; more is refused (a gzip bomb).
    """

    name = GZIP

    def __init__(self, min_size: int = 1024, *, max_inflated: int = DEFAULT_MAX_INFLATED) -> None:
        if not isinstance(min_size, int) or isinstance(min_size, bool) or min_size < 0:
            raise ValueError(f"min_size must be an int of at least 0, not {min_size!r}")
        if not isinstance(max_inflated, int) or isinstance(max_inflated, bool) or max_inflated < 1:
            raise ValueError(f"max_inflated must be a positive int, not {max_inflated!r}")
        self.min_size = min_size
        self.max_inflated = max_inflated

    def compress(self, body: bytes) -> bytes | None:
        """The gzip of `body`, or None when it is under the threshold or would not get smaller."""
        if len(body) < self.min_size:
            return None
        packed = gzip.compress(body, compresslevel=6, mtime=0)
        return packed if len(packed) < len(body) else None

    def inflate(self, body: bytes) -> bytes:
        """Undoes `compress`, refusing more than ``max_inflated`` bytes."""
        return inflate(body, self.max_inflated)


def inflate(body: bytes, limit: int) -> bytes:
    """A gzip body's bytes, at most `limit` of them."""
    inflater = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer
    try:
        out = inflater.decompress(body, limit)
        if inflater.unconsumed_tail:
            raise PayloadCodecError(f"the payload inflates to more than {limit:,} bytes; refused")
        if not inflater.eof:
            raise PayloadCodecError("the payload's gzip body is cut short")
    except zlib.error as exc:
        raise PayloadCodecError(f"the payload's gzip body cannot be read: {exc}") from None
    return out


class AesGcmCodec:
    """Encrypts payloads with AES-256-GCM under the active key; decrypts them under any key it holds.

    Each payload gets a random 96-bit nonce; its content type (codecs, key id, inner type) is authenticated
    with it, so neither can be changed unnoticed. Rotate keys by adding the new one and making it active:
    payloads under the old ids still decode while their keys are listed.

    Args:
        keys: Key id (1-64 of ``A-Z a-z 0-9 . _ -``) to its 32-byte key, as bytes or base64 text.
        active: The id of the key new payloads are encrypted under; may be left out with one key.

    Raises:
        ValueError: No keys, a malformed id, a key that is not 32 bytes (or not base64), or an unknown active
            id; the message names the id.
    """

    name = AES_256_GCM

    def __init__(self, keys: Mapping[str, bytes | str], active: str | None = None) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:  # pragma: no cover - a dependency of the package
            raise ImportError(
                "AesGcmCodec needs the 'cryptography' package (pip install cryptography)"
            ) from None
        if not keys:
            raise ValueError("AesGcmCodec needs at least one key")
        self._ciphers = {kid: AESGCM(_key_bytes(kid, key)) for kid, key in keys.items()}
        if active is None:
            if len(keys) != 1:
                raise ValueError(f"AesGcmCodec holds {len(keys)} keys: say which is active (active=...)")
            active = next(iter(keys))
        if active not in self._ciphers:
            raise ValueError(f"the active key id {active!r} is not among the keys ({', '.join(keys)})")
        self.active = active

    @property
    def key_ids(self) -> list[str]:
        """The ids of the keys held."""
        return list(self._ciphers)

    def seal(self, body: bytes, content_type: str) -> bytes:
        """Nonce, ciphertext and tag of `body` under the active key; `content_type` is the associated data."""
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._ciphers[self.active].encrypt(nonce, body, content_type.encode())

    def open(self, body: bytes, key_id: str, content_type: str) -> bytes:
        """Undoes `seal` under key `key_id`, checking that neither the bytes nor the content type changed."""
        from cryptography.exceptions import InvalidTag

        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadCodecError(
                f"the payload is encrypted under key id {key_id!r}, which this client does not hold "
                f"(it holds {', '.join(map(repr, self._ciphers))})"
            )
        if len(body) < NONCE_SIZE + TAG_SIZE:
            raise PayloadCodecError(f"the payload under key id {key_id!r} is too short to be AES-GCM")
        try:
            return bytes(cipher.decrypt(body[:NONCE_SIZE], body[NONCE_SIZE:], content_type.encode()))
        except InvalidTag:
            raise PayloadCodecError(
                f"the payload under key id {key_id!r} failed authentication: it or its content type was "
                "altered, or it was encrypted under another key with that id"
            ) from None


PayloadCodec = GzipCodec | AesGcmCodec
"""A codec of a chain: `GzipCodec` and `AesGcmCodec`, each at most once, gzip first."""


def _key_bytes(key_id: str, key: bytes | str) -> bytes:
    if not isinstance(key_id, str) or not KEY_ID.fullmatch(key_id):
        raise ValueError(f"key id {key_id!r} must be 1-64 of A-Z a-z 0-9 . _ -")
    if isinstance(key, str):
        try:
            key = base64.b64decode(key.strip().replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"key {key_id!r} is not valid base64") from None
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
        size = len(key) if isinstance(key, bytes | bytearray) else type(key).__name__
        raise ValueError(f"key {key_id!r} must be {KEY_SIZE} bytes (AES-256), not {size}")
    return bytes(key)


class CodecChain:
    """The codecs of one client, applied to every Payload of the messages it sends and receives.

    Args:
        codecs: `GzipCodec` and `AesGcmCodec`, each at most once, gzip first (compressing what is
            encrypted saves nothing).

    Raises:
        TypeError: An item that is neither codec.
        ValueError: A codec twice, or gzip after encryption.
    """

    def __init__(self, codecs: Sequence[PayloadCodec]) -> None:
        self.gzip: GzipCodec | None = None
        self.aes: AesGcmCodec | None = None
        self.codecs = list(codecs)
        for codec in codecs:
            if isinstance(codec, GzipCodec):
                if self.gzip is not None or self.aes is not None:
                    raise ValueError("codecs: GzipCodec at most once, and before AesGcmCodec")
                self.gzip = codec
            elif isinstance(codec, AesGcmCodec):
                if self.aes is not None:
                    raise ValueError("codecs: AesGcmCodec at most once")
                self.aes = codec
            else:
                raise TypeError(f"codecs: expected GzipCodec or AesGcmCodec, not {type(codec).__name__}")
        self._max_inflated = self.gzip.max_inflated if self.gzip else DEFAULT_MAX_INFLATED

    def __bool__(self) -> bool:
        return self.gzip is not None or self.aes is not None

    @property
    def names(self) -> list[str]:
        """The codecs' names, in order."""
        return [c.name for c in (self.gzip, self.aes) if c is not None]

    def encode(self, payload: types_pb2.Payload) -> None:
        """Encodes a Payload in place; one already encoded, or unset, is left as it is.

        Raises:
            ValueError: Its content type would grow over the server's limit.
        """
        kind = payload.WhichOneof("body")
        if kind is None or is_encoded(payload.content_type):
            return
        if kind == "json":
            body, inner = value_json(payload.json).encode(), JSON_CONTENT_TYPE
        else:
            body, inner = payload.raw, payload.content_type or OCTET_STREAM
        applied = []
        packed = self.gzip.compress(body) if self.gzip is not None else None
        if packed is not None:
            body = packed
            applied.append(GZIP)
        if self.aes is not None:
            applied.append(AES_256_GCM)
        if not applied:
            return
        content_type = build_content_type(applied, self.aes.active if self.aes else "", inner)
        if self.aes is not None:
            body = self.aes.seal(body, content_type)
        payload.raw = body
        payload.content_type = content_type

    def decode(self, payload: types_pb2.Payload) -> None:
        """Decodes a Payload in place; one not encoded is left as it is. A dead-letter copy's JSON holding an
        encoded original (see `_decode_copy`) is rewritten with the original decoded.

        Raises:
            PayloadCodecError: An unknown key id, a failed authentication, an unreadable encoding.
        """
        content_type = payload.content_type
        kind = payload.WhichOneof("body")
        if kind == "json" or (kind == "raw" and _is_json(content_type)):
            self._decode_copy(payload)
            return
        if kind != "raw" or not is_encoded(content_type):
            return
        try:
            codecs, key_id, inner = parse_content_type(content_type)
        except PayloadFormatError as exc:
            raise PayloadCodecError(str(exc)) from None
        body = payload.raw
        for name in reversed(codecs):
            if name == AES_256_GCM:
                if self.aes is None:
                    raise PayloadCodecError(
                        f"the payload is encrypted under key id {key_id!r}; this client has no AesGcmCodec"
                    )
                body = self.aes.open(body, key_id, content_type)
            else:
                body = inflate(body, self._max_inflated)
        payload.raw = body
        payload.content_type = inner

    def _decode_copy(self, payload: types_pb2.Payload) -> None:
        """Decodes the original inside a dead-letter copy's JSON, in place.

        The server copies a job that failed for good as JSON it writes itself (its engine's
        hand_off_dead_letters): the original's bytes as base64 text in ``original_data``, its content type
        in ``original_content_type``; so an encoded original stays encoded inside a copy whose own payload is
        plain JSON. Every read of the copy (get_job, wait_for_job, retries, searches, listings, a worker of
        the dead-letter queue) meets it here, so the copy reads as that of a plain original: the data decoded
        (JSON as JSON, other types as base64 again) under its inner content type. Anything else is left as
        it is.
        """
        if payload.WhichOneof("body") == "json":
            fields = payload.json.struct_value.fields
            if "original_content_type" not in fields or not is_encoded(
                fields["original_content_type"].string_value
            ):
                return
            copy = value_to_python(payload.json)
        else:
            if _ENCODED_MARK not in payload.raw:
                return
            try:
                copy = json.loads(payload.raw)
            except ValueError:
                return
        decoded = self._decoded_copy(copy)
        if decoded is None:
            return
        if payload.WhichOneof("body") == "json":
            payload.json.CopyFrom(python_to_value(decoded))
        else:
            payload.raw = json.dumps(decoded, separators=(",", ":"), ensure_ascii=False).encode()

    def _decoded_copy(self, copy: object) -> dict[str, object] | None:
        """A copy's JSON with its encoded original decoded; None when it holds no encoded original."""
        if not isinstance(copy, dict):
            return None
        content_type, data = copy.get("original_content_type"), copy.get("original_data")
        if not isinstance(content_type, str) or not is_encoded(content_type) or not isinstance(data, str):
            return None
        try:
            raw = base64.b64decode(data, validate=True)
        except binascii.Error:
            return None
        original = types_pb2.Payload(raw=raw, content_type=content_type)
        self.decode(original)
        inner = original.content_type
        value: object
        if _is_json(inner):
            try:
                value = json.loads(original.raw)
            except ValueError:
                raise PayloadCodecError(
                    f"the dead-letter copy's original data decodes to bytes that are not the {inner} it names"
                ) from None
        else:
            value = base64.b64encode(original.raw).decode()
        return {**copy, "original_data": value, "original_content_type": inner}

    def encode_message(self, message: Message) -> None:
        """Encodes every Payload in a request message, however deep."""
        walk_payloads(message, self.encode)

    def decode_message(self, message: Message) -> None:
        """Decodes every Payload in a response message, however deep.

        Raises:
            PayloadCodecError: One of them cannot be decoded.
        """
        walk_payloads(message, self.decode)


def _is_json(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == JSON_CONTENT_TYPE


def refuse_result_conditions(steps: Iterable[workflows_pb2.WorkflowStep]) -> None:
    """Refuses a workflow whose ``run_if`` reads a step's result when the client has codecs: its workers
    encode results the same way, and the server, which cannot read them, would judge the condition on the
    encoded bytes and skip or run the step wrongly, silently. Conditions on an error (``source="error"``)
    are fine: failure messages are never encoded.

    Raises:
        ValueError: Naming the step and the condition.
    """
    for step in steps:
        for condition in step.run_if:
            if condition.source != workflows_pb2.CONDITION_SOURCE_ERROR:
                raise ValueError(
                    f"workflow step {step.key or step.job_name!r}: run_if on a result cannot work with "
                    "payload codecs (the server cannot read encoded results); decide in the step's processor "
                    "instead, or use a client without codecs"
                )
        refuse_result_conditions(step.on_success)
        refuse_result_conditions(step.on_failure)


def make_chain(codecs: Sequence[PayloadCodec] | None) -> CodecChain | None:
    """A client's chain: its ``codecs`` argument, or the environment's when None; None when there are none."""
    chain = CodecChain(codecs_from_env() if codecs is None else codecs)
    return chain if chain else None


def codecs_from_env(environ: Mapping[str, str] | None = None) -> list[PayloadCodec]:
    """The codecs the environment configures (what the CLI, workers and the dashboard use).

    ``QM_CODEC_KEYS="k1:BASE64,k2:BASE64"`` gives an `AesGcmCodec` whose active key is
    ``QM_CODEC_ACTIVE_KEY`` (may be left out with one key); ``QM_CODEC_GZIP_MIN_SIZE=1024`` a `GzipCodec`
    before it. Neither set: no codecs.

    Raises:
        ValueError: A malformed variable; the message names it.
    """
    env = os.environ if environ is None else environ
    codecs: list[PayloadCodec] = []
    min_size = env.get("QM_CODEC_GZIP_MIN_SIZE", "").strip()
    if min_size:
        if not min_size.isdigit():
            raise ValueError(f"QM_CODEC_GZIP_MIN_SIZE must be a number of bytes, not {min_size!r}")
        codecs.append(GzipCodec(int(min_size)))
    spec = env.get("QM_CODEC_KEYS", "").strip()
    if spec:
        keys: dict[str, str] = {}
        for item in spec.split(","):
            key_id, sep, key = item.strip().partition(":")
            if not sep or key_id in keys:
                raise ValueError("QM_CODEC_KEYS must be 'id:BASE64,id:BASE64', each id once")
            keys[key_id] = key
        try:
            codecs.append(AesGcmCodec(keys, env.get("QM_CODEC_ACTIVE_KEY", "").strip() or None))
        except ValueError as exc:
            raise ValueError(f"QM_CODEC_KEYS / QM_CODEC_ACTIVE_KEY: {exc}") from None
    elif env.get("QM_CODEC_ACTIVE_KEY", "").strip():
        raise ValueError("QM_CODEC_ACTIVE_KEY is set without QM_CODEC_KEYS")
    return codecs
