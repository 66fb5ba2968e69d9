"""Redis Sentinel: the settings of ``qm serve --redis-sentinel``, the client that follows the primary, and
the start-up diagnosis when the sentinels name none. docs/operations.md ("Redis Sentinel") is the user's
version.

How a failover is followed: every connection asks the sentinels for the primary's address when it connects
(engine/clients.py `SentinelPool`); a connection that breaks (the primary died) or is answered READONLY (the
primary was demoted) is dropped and connects again that way. So the engine's held connections
(engine/direct.py), its pipelines and the event subscription (components/notifier.py) all end up on the new
primary, whose empty script cache the NOSCRIPT path fills (engine/scripts.py `resend_refused`). Calls made
while no primary answers get UNAVAILABLE (services/errors.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel

from queue_manager_server import security
from queue_manager_server.engine.clients import SentinelConnection, SentinelPool, SentinelSSLConnection
from queue_manager_server.engine.packing import hiredis_packing

if TYPE_CHECKING:
    from queue_manager_server.config import Settings

# The embedded Valkey's settings: given with --redis-sentinel (which starts none) they would do nothing.
_EMBEDDED = (
    ("data_dir", "--data-dir (QM_DATA_DIR)"),
    ("durability", "--durability (QM_DURABILITY)"),
    ("valkey_allocator", "--valkey-allocator (QM_VALKEY_ALLOCATOR)"),
    ("embedded_port", "--embedded-port (QM_EMBEDDED_PORT)"),
)


def add_arguments(p: argparse.ArgumentParser, e: Callable[[str, object], str]) -> None:
    """The Sentinel flags of ``qm serve`` (defaults from ``QM_*``)."""
    p.add_argument(
        "--redis-sentinel",
        default=e("QM_REDIS_SENTINEL", ""),
        help="HOST:PORT[,HOST:PORT…] of Redis Sentinels: the server follows the primary they name through "
        "failovers (docs/operations.md) [QM_REDIS_SENTINEL]",
    )
    p.add_argument(
        "--redis-sentinel-master",
        default=e("QM_REDIS_SENTINEL_MASTER", ""),
        help="name of the master the sentinels monitor (sentinel monitor NAME …) [QM_REDIS_SENTINEL_MASTER]",
    )
    p.add_argument(
        "--redis-sentinel-password",
        default=e("QM_REDIS_SENTINEL_PASSWORD", ""),
        help="the sentinels' own password (their requirepass); the data nodes' is REDIS_PASSWORD "
        "[QM_REDIS_SENTINEL_PASSWORD]",
    )
    p.add_argument(
        "--redis-sentinel-tls",
        action="store_true",
        default=e("QM_REDIS_SENTINEL_TLS", "").strip().lower() in security.TRUE,
        help="TLS to the sentinels and the data nodes (with --redis-tls-*) [QM_REDIS_SENTINEL_TLS]",
    )


def values(a: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    """The Settings fields of the parsed Sentinel flags, and the data nodes' credentials and database (the
    seed's REDIS_USERNAME, REDIS_PASSWORD and REDIS_DB); raises ValueError for a REDIS_DB not a number."""
    db = env.get("REDIS_DB", "0").strip() or "0"
    if not db.isdigit():
        raise ValueError(f"REDIS_DB must be a database number, not {db!r}")
    return {
        "redis_sentinel": a.redis_sentinel.strip(),
        "redis_sentinel_master": a.redis_sentinel_master.strip(),
        "redis_sentinel_password": a.redis_sentinel_password,
        "redis_sentinel_tls": a.redis_sentinel_tls,
        "redis_username": env.get("REDIS_USERNAME", ""),
        "redis_password": env.get("REDIS_PASSWORD", ""),
        "redis_db": int(db),
    }


def addresses(value: str) -> list[tuple[str, int]]:
    """The sentinels of a --redis-sentinel value; raises ValueError when malformed."""
    found = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError(f"{part!r} is not HOST:PORT with a port from 1 to 65535")
        found.append((host, int(port)))
    if not found:
        raise ValueError("no sentinel given: expected HOST:PORT[,HOST:PORT…]")
    return found


def problem(s: Settings) -> str | None:
    """What is wrong with the Sentinel settings, or None when they will do (or Sentinel is off)."""
    if not s.redis_sentinel:
        if s.redis_sentinel_master or s.redis_sentinel_password or s.redis_sentinel_tls:
            return (
                "--redis-sentinel-master/-password/-tls (QM_REDIS_SENTINEL_*) need --redis-sentinel "
                "(QM_REDIS_SENTINEL) naming the sentinels as HOST:PORT[,HOST:PORT…]"
            )
        return None
    try:
        addresses(s.redis_sentinel)
    except ValueError as exc:
        return f"--redis-sentinel (QM_REDIS_SENTINEL): {exc}"
    if not s.redis_sentinel_master:
        return (
            "--redis-sentinel (QM_REDIS_SENTINEL) needs --redis-sentinel-master (QM_REDIS_SENTINEL_MASTER): "
            "the name of the master the sentinels monitor (their 'sentinel monitor NAME …' line)"
        )
    if s.redis_cluster:
        return (
            "--redis-sentinel and --redis-cluster (QM_REDIS_CLUSTER) cannot be combined: Sentinel watches "
            "one primary and its replicas, a Cluster fails over by itself; give the one your Redis runs"
        )
    if s.redis_url is not None:
        return (
            "--redis-sentinel and --redis-url (QM_REDIS_URL, REDIS_URL or REDIS_HOST) both say where Redis "
            "is: with Sentinel the sentinels name the primary; unset the URL (the data nodes' password goes "
            "in REDIS_PASSWORD)"
        )
    from queue_manager_server.config import Settings

    defaults = Settings()
    for name, flag in _EMBEDDED:
        if getattr(s, name) != getattr(defaults, name):
            return (
                f"{flag} sets up the embedded Valkey, which --redis-sentinel does not start; drop it (the "
                "data nodes' own settings, appendonly and appendfsync, decide what survives)"
            )
    return None


def _tls(s: Settings) -> dict[str, Any]:
    """TLS arguments of the sentinels' and data nodes' connections (none without --redis-sentinel-tls)."""
    if not s.redis_sentinel_tls:
        return {}
    return security.redis_tls_kwargs(s) or {"ssl_cert_reqs": "required"}


def _sentinels(s: Settings) -> Sentinel:
    timeout = s.redis_timeout_ms / 1000
    ssl = {"ssl": True, **_tls(s)} if s.redis_sentinel_tls else {}
    return Sentinel(
        addresses(s.redis_sentinel),
        sentinel_kwargs={
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "password": s.redis_sentinel_password or None,
            **ssl,
        },
    )


def connect(s: Settings, retry: Retry) -> Redis:
    """The client of the sentinels' primary over a blocking pool (a burst waits for a free connection, as
    with one server: app.py), whose connections find the primary through the sentinels."""
    timeout = s.redis_timeout_ms / 1000
    base = SentinelSSLConnection if s.redis_sentinel_tls else SentinelConnection
    pool = SentinelPool(  # type: ignore[no-untyped-call]
        s.redis_sentinel_master,
        _sentinels(s),
        connection_class=hiredis_packing(base),
        max_connections=s.redis_max_connections,
        timeout=timeout,
        username=s.redis_username or None,
        password=s.redis_password or None,
        db=s.redis_db,
        decode_responses=False,
        socket_keepalive=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=retry,
        **_tls(s),
    )
    return Redis.from_pool(pool)  # the client owns the pool, which owns the sentinels' clients


async def diagnose(s: Settings) -> str | None:
    """Why the sentinels gave no primary, in words an operator can act on; None when they now do."""
    master, where = s.redis_sentinel_master, s.redis_sentinel
    sentinels = _sentinels(s)
    errors: list[str] = []
    watched: set[str] = set()
    state: dict[str, Any] | None = None
    try:
        for client in sentinels.sentinels:
            kwargs = client.connection_pool.connection_kwargs
            try:
                masters: dict[str, dict[str, Any]] = await client.sentinel_masters()  # type: ignore[assignment]
            except Exception as exc:
                errors.append(f"{kwargs['host']}:{kwargs['port']}: {exc}")
                continue
            watched.update(masters)
            if master in masters:
                state = masters[master]
                if sentinels.check_master_state(state, master):
                    return None
    finally:
        await sentinels.aclose()
    if state is not None:
        return (
            f"the sentinels ({where}) report master {master!r} at {state.get('ip')}:{state.get('port')} as "
            "down and have promoted no replica yet (a failover may be under way); retry shortly"
        )
    if not watched and errors:
        return (
            f"cannot reach any sentinel of --redis-sentinel {where} ({'; '.join(errors)}); check the "
            "addresses, --redis-sentinel-password and --redis-sentinel-tls"
        )
    return (
        f"no sentinel at {where} monitors a master named {master!r} (they monitor: "
        f"{', '.join(sorted(watched)) or 'none'}); check --redis-sentinel-master (QM_REDIS_SENTINEL_MASTER)"
    )
