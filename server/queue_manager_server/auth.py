"""Bearer tokens: the token file, the principal a token stands for, and the constant-time check.

The token file (``--auth-file`` / ``QM_AUTH_FILE``, TOML or JSON) lists one entry per token: a name, the
SHA-256 of the token (never the token itself), one role or several, and the queue-name patterns (fnmatch
globs) the token may touch::

    [[tokens]]
    name = "billing-api"
    sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    role = "producer"
    queues = ["billing-*"]

A presented token is hashed and compared with every entry's hash by `hmac.compare_digest` (no early exit,
so the time taken says nothing about which entry came close). Tokens are never logged; the entry's name
stands for the caller in logs. The file is re-read when it changes (checked at most every
`RELOAD_CHECK_S`), so tokens can be added and revoked without a restart; a file that no longer parses keeps
the previous tokens and logs why.

docs/security.md has the role table; `queue_manager_server.access` applies it to each RPC.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("queue_manager_server.auth")

# What each role may do. A token may hold several roles (a worker that also adds follow-up jobs).
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "producer": frozenset({"read", "produce"}),
    "worker": frozenset({"work"}),
    "admin": frozenset({"read", "produce", "work", "admin"}),
}
PERMISSIONS = ("read", "produce", "work", "admin")
# How often a request may stat the token file to see whether it changed.
RELOAD_CHECK_S = 2.0
# A pattern is a queue name with glob characters: nothing that could not appear in a queue name but those.
_PATTERN = re.compile(r"[A-Za-z0-9_.\-*?\[\]!]{1,200}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9_.@:\-]{1,100}")


class AuthFileError(Exception):
    """The token file cannot be used; the message names the entry and the field."""


def hash_token(token: str) -> str:
    """The SHA-256 (hex) of a token, as the token file stores it."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a token stands for: its name, what it may do and on which queues."""

    name: str
    roles: frozenset[str]
    patterns: tuple[str, ...]
    permissions: frozenset[str] = field(default=frozenset())
    all_queues: bool = False

    @classmethod
    def of(cls, name: str, roles: Iterable[str], patterns: Sequence[str]) -> Principal:
        roles = frozenset(roles)
        perms = frozenset(p for r in roles for p in ROLE_PERMISSIONS[r])
        return cls(name, roles, tuple(patterns), perms, "*" in patterns)

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    def allows(self, queue: str) -> bool:
        """Whether the token's queue patterns cover this queue (case-sensitive globs)."""
        return self.all_queues or any(fnmatch.fnmatchcase(queue, p) for p in self.patterns)


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    principal: Principal


def parse_entries(data: Mapping[str, Any], source: str) -> list[_Entry]:
    """Validates the token file's content; raises `AuthFileError` naming the first bad field."""
    tokens = data.get("tokens")
    if not isinstance(tokens, list) or not tokens:
        raise AuthFileError(f"{source}: expected a non-empty list 'tokens' (TOML: [[tokens]] tables)")
    entries: list[_Entry] = []
    names: set[str] = set()
    digests: set[str] = set()
    for i, raw in enumerate(tokens):
        where = f"{source}: tokens[{i}]"
        if not isinstance(raw, dict):
            raise AuthFileError(f"{where}: expected a table with name, sha256, role and queues")
        unknown = set(raw) - {"name", "sha256", "role", "roles", "queues", "comment"}
        if unknown:
            raise AuthFileError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        name = raw.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise AuthFileError(f"{where}.name: 1-100 letters, digits and - _ . @ : are required")
        if name in names:
            raise AuthFileError(f"{where}.name: {name!r} is used twice")
        digest = raw.get("sha256")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest.lower()):
            raise AuthFileError(
                f"{where}.sha256: the token's SHA-256 as 64 hex digits is required (qm auth hash-token)"
            )
        if digest.lower() in digests:
            raise AuthFileError(f"{where}.sha256: the same token is listed twice")
        roles = _roles(raw, where)
        patterns = raw.get("queues")
        if (
            not isinstance(patterns, list)
            or not patterns
            or not all(isinstance(p, str) and _PATTERN.fullmatch(p) for p in patterns)
        ):
            raise AuthFileError(
                f"{where}.queues: a non-empty list of queue-name patterns is required "
                '(fnmatch globs such as "billing-*"; ["*"] for every queue)'
            )
        names.add(name)
        digests.add(digest.lower())
        entries.append(_Entry(bytes.fromhex(digest), Principal.of(name, roles, patterns)))
    return entries


def _roles(raw: Mapping[str, Any], where: str) -> list[str]:
    if "role" in raw and "roles" in raw:
        raise AuthFileError(f"{where}: give either role or roles, not both")
    value = raw.get("roles", raw.get("role"))
    roles = [value] if isinstance(value, str) else value
    if not isinstance(roles, list) or not roles or not all(r in ROLE_PERMISSIONS for r in roles):
        raise AuthFileError(f"{where}.role: one of {', '.join(ROLE_PERMISSIONS)} (or a list in roles)")
    return roles


def load_file(path: Path) -> list[_Entry]:
    """Reads and validates a token file (TOML, or JSON when it ends in .json)."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise AuthFileError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise AuthFileError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise AuthFileError(f"{path}: expected a table with a 'tokens' list")
    return parse_entries(data, str(path))


class AuthError(Exception):
    """Authentication failed; the message says what to send (never echoes the token)."""


def bearer_token(value: str | None) -> str:
    """The token of an ``authorization`` value: ``Bearer <token>``, or HTTP ``Basic`` with the token as the
    password (what a browser's login prompt sends)."""
    if not value:
        raise AuthError("missing credentials: send the metadata 'authorization: Bearer <token>'")
    scheme, _, rest = value.strip().partition(" ")
    rest = rest.strip()
    if scheme.lower() == "bearer" and rest:
        return rest
    if scheme.lower() == "basic" and rest:
        try:
            _, sep, password = base64.b64decode(rest, validate=True).decode().partition(":")
        except ValueError:
            raise AuthError("malformed Basic credentials") from None
        if sep and password:
            return password
    raise AuthError("malformed credentials: use 'authorization: Bearer <token>'")


class Authenticator:
    """Turns presented tokens into principals; re-reads the token file when it changes."""

    def __init__(self, path: Path | None = None, entries: Sequence[_Entry] = ()) -> None:
        self.path = path
        self._entries = list(entries)
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        # Tokens minted by the server itself (the web dashboard's session processes), by hash.
        self._minted: dict[bytes, Principal] = {}
        if path is not None:
            self._entries = load_file(path)
            self._stamp = _stamp(path)
        self._checked = time.monotonic()

    @property
    def names(self) -> list[str]:
        return [e.principal.name for e in self._entries]

    def authenticate(self, token: str) -> Principal:
        """The principal of a token; raises `AuthError` when no entry matches."""
        self._maybe_reload()
        digest = hashlib.sha256(token.encode()).digest()
        found: Principal | None = None
        for e in self._entries:  # every entry is compared: no early exit
            if hmac.compare_digest(digest, e.digest):
                found = e.principal
        if found is None and self._minted:
            for d, p in list(self._minted.items()):
                if hmac.compare_digest(digest, d):
                    found = p
        if found is None:
            raise AuthError("invalid token")
        return found

    def from_header(self, value: str | None) -> Principal:
        return self.authenticate(bearer_token(value))

    def mint(self, principal: Principal) -> str:
        """A fresh token for a principal, valid until `revoke` (kept hashed in memory only)."""
        token = new_token()
        self._minted[hashlib.sha256(token.encode()).digest()] = principal
        return token

    def revoke(self, token: str) -> None:
        self._minted.pop(hashlib.sha256(token.encode()).digest(), None)

    def _maybe_reload(self) -> None:
        if self.path is None:
            return
        now = time.monotonic()
        if now - self._checked < RELOAD_CHECK_S:
            return
        self._checked = now
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._entries = load_file(self.path)
        except AuthFileError as exc:
            log.error("token file not reloaded; the previous tokens stay in force", extra={"error": str(exc)})
            return
        log.info("token file reloaded", extra={"tokens": len(self._entries)})


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino
