"""Server settings: flags override environment variables, which override defaults.

Environment: QM_* for every setting, plus the seed's REDIS_HOST, REDIS_PORT, REDIS_PASSWORD, REDIS_DB,
LOG_LEVEL and the common REDIS_URL. With no Redis configured (no URL, no Sentinel: sentinel.py) the server
starts a private Valkey.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from redis.connection import parse_url

from queue_manager_server import security, sentinel
from queue_manager_server.embedded import ALLOCATORS, DURABILITY_MODES
from queue_manager_server.engine.engine import HELD_CONNECTIONS
from queue_manager_server.engine.store import TEST_CLOCK_ON_CLUSTER

# The fewest Redis connections a server may be given: those it holds for its lifetime (the engine's, and
# its event subscription: components/notifier.py), and four for everything else. A smaller pool left
# requests waiting for a connection that never came free, then failing UNAVAILABLE.
MIN_REDIS_CONNECTIONS = HELD_CONNECTIONS + 1 + 4
# The levels --log-level takes (the ones the docs name, and CRITICAL).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def pool_too_small(max_connections: int) -> str | None:
    """What is wrong with a Redis pool of this size, or None when it will do."""
    if max_connections >= MIN_REDIS_CONNECTIONS:
        return None
    return (
        f"--redis-max-connections must be at least {MIN_REDIS_CONNECTIONS}: the server holds "
        f"{HELD_CONNECTIONS + 1} for its lifetime and needs others for requests"
    )


def key_prefix_problem(prefix: str) -> str | None:
    """What is wrong with this Redis key prefix, or None when the keys built on it (engine/keys.py) work.

    Every key of a queue carries its ``{queue}`` hash tag, and Redis Cluster hashes only what lies between
    the first ``{`` and the next ``}``: a brace in the prefix would move every queue's keys into the
    prefix's slot, or split them across slots, and an empty prefix would leave keys starting with ``:``.
    """
    if not prefix:
        return "--key-prefix (QM_KEY_PREFIX) must not be empty; give one such as 'qm' (the default)"
    if "{" in prefix or "}" in prefix:
        return (
            f"--key-prefix (QM_KEY_PREFIX) must not contain '{{' or '}}' (each queue's keys carry a "
            f"{{queue}} hash tag for Redis Cluster), not {prefix!r}"
        )
    return None


def url_problem(url: str | None) -> str | None:
    """What is wrong with this Redis URL, or None when redis-py can connect with it (or it is unset)."""
    if url is None:
        return None
    problem = None
    try:
        parse_url(url)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    except ValueError as exc:
        problem = str(exc).rstrip(".")
    # redis-py reads a database that is not a number as database 0; the caller meant another one.
    parts = urlsplit(url)
    db = parts.path.strip("/") if parts.scheme in ("redis", "rediss") else ""
    if problem is None and db and not db.isdigit():
        problem = f"the database in the URL's path must be a number, not {db!r}"
    if problem is None:
        return None
    # The message names no part of the URL, which may hold a password.
    return (
        f"--redis-url (QM_REDIS_URL, REDIS_URL or REDIS_HOST/REDIS_PORT/REDIS_DB): {problem}; give a URL "
        "such as redis://:PASSWORD@HOST:6379/0, rediss://HOST:6379/0 or unix:///run/valkey.sock?db=0"
    )


def cluster_problem(cluster: bool, url: str | None) -> str | None:
    """What is wrong with cluster mode for this Redis URL, or None when it will do (or is off)."""
    if not cluster:
        return None
    if url is None:
        return (
            "--redis-cluster (QM_REDIS_CLUSTER) needs --redis-url (QM_REDIS_URL, REDIS_URL or REDIS_HOST) "
            "naming a node of the Redis/Valkey Cluster; the embedded Valkey is a single server"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return (
            f"--redis-cluster (QM_REDIS_CLUSTER) needs a redis:// or rediss:// URL of a cluster node, not "
            f"{parts.scheme or 'a plain path'}: (a cluster is not reached through a unix socket)"
        )
    db = parts.path.strip("/")
    if db not in ("", "0"):
        return (
            f"--redis-cluster (QM_REDIS_CLUSTER): a Redis/Valkey Cluster has database 0 only, and the URL "
            f"names database {db}; drop /{db} from it (or unset REDIS_DB)"
        )
    return None


def test_clock_problem(test_clock: bool, cluster: bool) -> str | None:
    """What is wrong with the test clock on this Redis, or None when it will do (or is off)."""
    return TEST_CLOCK_ON_CLUSTER if test_clock and cluster else None


@dataclass(slots=True)
class Settings:
    listen: str = "127.0.0.1:50051"
    # None: start an embedded Valkey in data_dir.
    redis_url: str | None = None
    # redis_url names a node of a Redis/Valkey Cluster (engine/store.py, docs/operations.md).
    redis_cluster: bool = False
    # Redis Sentinel (sentinel.py, docs/operations.md): the sentinels as "HOST:PORT,HOST:PORT" and the name of
    # the master they watch; "" = off. The sentinels' own password, TLS to sentinels and data nodes alike, and
    # the data nodes' user, password and database (with a URL these are part of it: REDIS_USERNAME…).
    redis_sentinel: str = ""
    redis_sentinel_master: str = ""
    redis_sentinel_password: str = ""
    redis_sentinel_tls: bool = False
    redis_username: str = ""
    redis_password: str = ""
    redis_db: int = 0
    data_dir: str = ".qm-data"
    # The embedded Valkey's appendfsync: "always" (an acknowledged write is fsynced) or "everysec".
    durability: str = "always"
    # The embedded Valkey's malloc: "mimalloc" (where installed, embedded.py) or "libc" (its build's).
    valkey_allocator: str = "mimalloc"
    key_prefix: str = "qm"
    lease_ms: int = 30_000
    max_payload_bytes: int = 1024 * 1024
    shutdown_grace_ms: int = 10_000
    reaper_interval_ms: int = 1_000
    # How often the priority sweep moves jobs past their queue's priority bound ahead (components/aging.py):
    # a bound holds to within this much.
    priority_sweep_ms: int = 1_000
    # How often jobs whose expiry passed while nobody claimed them are ended (components/expiry.py).
    expiry_sweep_ms: int = 1_000
    # How long a queue's memory estimate (QueueMetrics.memory_bytes, engine/memory.py) is used before a
    # metrics read asks for a new one; 0: with every read.
    memory_estimate_ms: int = 30_000
    # Longest wait for one Redis connect or reply; a Redis that stops answering then gives UNAVAILABLE.
    redis_timeout_ms: int = 10_000
    # Redis connections one server process keeps at most; requests beyond wait for a free one.
    redis_max_connections: int = 256
    log_level: str = "INFO"
    server_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # Ask the embedded Valkey to listen on this port (0 = any free port).
    embedded_port: int = 0
    # How often the janitor runs (retention, dead-letter hand-offs, bulk streams left behind).
    janitor_interval_ms: int = 30_000
    # A bulk stream staged this long without a new chunk or a commit is rolled back (its writer is gone).
    bulk_idle_ms: int = 60_000
    # Testing knob: where the process kills itself (services/flows.py CRASH_POINTS); "" in production.
    test_crash_point: str = ""
    # For users' own test suites (queue_manager_server.testing, docs/testing.md): Redis's clock as the server
    # sees it is moved forward by an offset a test controls (engine/clock.py). Never a `qm serve` flag: a
    # production server on it would run delays and schedules by whatever offset the key holds. One Redis
    # server only (a Cluster is refused).
    test_clock: bool = False
    # HOST:PORT of the HTTP port (/metrics; http/__init__.py); "" = off. `qm serve` defaults it to
    # DEFAULT_HTTP_LISTEN; embedding code and tests turn it on explicitly.
    http_listen: str = ""
    # Security and limits (security.py, docs/security.md): token file, TLS of the gRPC port (mutual with a
    # client CA), Redis TLS, and the resource bounds.
    auth_file: str = ""
    insecure: bool = False
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    redis_tls_ca: str = ""
    redis_tls_cert: str = ""
    redis_tls_key: str = ""
    max_bulk_bytes: int = 128 * 1024 * 1024
    max_concurrent_rpcs: int = 10_000
    max_worker_streams: int = 10_000
    max_streams_per_connection: int = 1_000
    max_worker_credits: int = 10_000
    max_worker_buffer: int = 1_000
    worker_stall_ms: int = 60_000
    # WatchJobEvents (services/job_events.py): the events one watcher may have waiting to be sent before its
    # stream ends with RESOURCE_EXHAUSTED, and how long a queue's scripts go on publishing its events after
    # this server last renewed its watch (renewed every third of it).
    events_buffer: int = 10_000
    events_ttl_ms: int = 15_000

    @property
    def heartbeat_ms(self) -> int:
        return max(self.lease_ms // 3, 100)

    @property
    def max_message_bytes(self) -> int:
        # Room for a full bulk message of payload-limit jobs plus framing.
        return max(16 * 1024 * 1024, self.max_payload_bytes * 4)


DEFAULT_HTTP_LISTEN = "127.0.0.1:3010"
# --http-listen values that turn the HTTP port off.
_OFF = {"", "off", "none", "no", "false", "0", "disabled"}


def host_port(value: str, also: str = "") -> str:
    """HOST:PORT with a port from 0 (any free one) to 65535; raises ValueError when malformed (gRPC itself
    would read port 115701 as 50165 and -1 as 65535)."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{value!r} is not HOST:PORT with a port from 0 to 65535{also}")
    return value.strip()


def listen(value: str) -> str:
    """A --listen value: HOST:PORT, or a unix socket (unix:PATH); raises ValueError when malformed."""
    if value.startswith(("unix:", "unix-abstract:")):
        return value
    return host_port(value, " (or unix:PATH)")


def http_listen(value: str) -> str:
    """A --http-listen value as HOST:PORT, or "" for off; raises ValueError when malformed."""
    if value.strip().lower() in _OFF:
        return ""
    return host_port(value, " (or 'off')")


def redis_url_from_env(env: Mapping[str, str]) -> str | None:
    """QM_REDIS_URL, then REDIS_URL, then REDIS_HOST/PORT/USERNAME/PASSWORD/DB (rediss:// when a
    QM_REDIS_TLS_* file is set); None when nothing is set."""
    url = env.get("QM_REDIS_URL") or env.get("REDIS_URL")
    if url:
        return url
    host = env.get("REDIS_HOST")
    if not host:
        return None
    password = env.get("REDIS_PASSWORD")
    user = quote(env.get("REDIS_USERNAME", ""), safe="")  # an ACL user (docs/security.md)
    auth = f"{user}:{quote(password, safe='')}@" if password else ""
    scheme = "rediss" if any(env.get(f"QM_REDIS_TLS_{k}") for k in ("CA", "CERT", "KEY")) else "redis"
    return f"{scheme}://{auth}{host}:{env.get('REDIS_PORT', '6379')}/{env.get('REDIS_DB', '0')}"


# The environment variables a flag's help ends with: its default goes before them.
_ENV_NOTE = re.compile(r"( \[[A-Z_, /]+\])?$")


def _show_defaults(p: argparse.ArgumentParser) -> None:
    """Adds each number flag's default (as the environment leaves it) to its help: ``qm serve --help`` named
    none, so a person could not tell what a lease or a limit was without reading the source."""
    for action in p._actions:
        if (
            action.type is int
            and action.help not in (None, argparse.SUPPRESS)
            and "default" not in action.help
        ):
            action.help = _ENV_NOTE.sub(r" (default %(default)s)\1", action.help, count=1)


def parse_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    d = Settings()

    def e(name: str, default: object) -> str:
        return env.get(name, str(default))

    p = argparse.ArgumentParser(prog="qm serve", description="Run the Queue Manager gRPC server.")

    def ei(name: str, default: int) -> int:
        # int() alone would end the start in a traceback for a variable such as QM_LEASE_DURATION_MS=30s.
        raw = e(name, default)
        try:
            return int(raw)
        except ValueError:
            p.error(f"{name} must be a whole number, not {raw!r}")

    p.add_argument(
        "--listen",
        default=e("QM_LISTEN", d.listen),
        help="HOST:PORT to serve gRPC on (default %(default)s) [QM_LISTEN]",
    )
    p.add_argument(
        "--redis-url",
        default=redis_url_from_env(env),
        help="Redis/Valkey URL [QM_REDIS_URL, REDIS_URL, REDIS_HOST/PORT/PASSWORD/DB]; "
        "unset: start an embedded Valkey",
    )
    p.add_argument(
        "--redis-cluster",
        action="store_true",
        default=e("QM_REDIS_CLUSTER", "").strip().lower() in security.TRUE,
        help="--redis-url names a node of a Redis/Valkey Cluster; the server finds the others "
        "(docs/operations.md) [QM_REDIS_CLUSTER]",
    )
    sentinel.add_arguments(p, e)
    p.add_argument(
        "--data-dir", default=e("QM_DATA_DIR", d.data_dir), help="embedded Valkey data dir [QM_DATA_DIR]"
    )
    p.add_argument(
        "--durability",
        default=e("QM_DURABILITY", d.durability),
        help="embedded Valkey: 'always' (default; an add is acknowledged once fsynced) or 'everysec' "
        "(faster; a Valkey crash can lose the last acknowledged writes) [QM_DURABILITY]",
    )
    p.add_argument(
        "--valkey-allocator",
        default=e("QM_VALKEY_ALLOCATOR", d.valkey_allocator),
        help="embedded Valkey's malloc: 'mimalloc' (default; less CPU per job) or 'libc' (its build's, "
        "glibc) [QM_VALKEY_ALLOCATOR]",
    )
    p.add_argument(
        "--key-prefix", default=e("QM_KEY_PREFIX", d.key_prefix), help="Redis key prefix [QM_KEY_PREFIX]"
    )
    p.add_argument(
        "--lease-ms",
        type=int,
        default=ei("QM_LEASE_DURATION_MS", d.lease_ms),
        help="job lease [QM_LEASE_DURATION_MS]",
    )
    p.add_argument(
        "--max-payload-bytes",
        type=int,
        default=ei("QM_MAX_PAYLOAD_BYTES", d.max_payload_bytes),
        help="largest job data or result [QM_MAX_PAYLOAD_BYTES]",
    )
    p.add_argument(
        "--shutdown-grace-ms",
        type=int,
        default=ei("QM_SHUTDOWN_GRACE_MS", d.shutdown_grace_ms),
        help="time in-flight jobs get to finish on shutdown [QM_SHUTDOWN_GRACE_MS]",
    )
    p.add_argument(
        "--reaper-interval-ms",
        type=int,
        default=ei("QM_REAPER_INTERVAL_MS", d.reaper_interval_ms),
        help="how often expired leases are looked for [QM_REAPER_INTERVAL_MS]",
    )
    p.add_argument(
        "--priority-sweep-ms",
        type=int,
        default=ei("QM_PRIORITY_SWEEP_MS", d.priority_sweep_ms),
        help="how often jobs past their queue's priority bound (max wait) are moved ahead; a bound holds to "
        "within this [QM_PRIORITY_SWEEP_MS]",
    )
    p.add_argument(
        "--memory-estimate-ms",
        type=int,
        default=ei("QM_MEMORY_ESTIMATE_MS", d.memory_estimate_ms),
        help="how long a queue's memory estimate is used before a metrics read measures again; 0: every "
        "read [QM_MEMORY_ESTIMATE_MS]",
    )
    p.add_argument(
        "--expiry-sweep-ms",
        type=int,
        default=ei("QM_EXPIRY_SWEEP_MS", d.expiry_sweep_ms),
        help="how often jobs whose expiry (expire_after) passed while nobody claimed them are ended as "
        "expired [QM_EXPIRY_SWEEP_MS]",
    )
    p.add_argument(
        "--events-buffer",
        type=int,
        default=ei("QM_EVENTS_BUFFER", d.events_buffer),
        help="job events one WatchJobEvents stream may have waiting to be sent; a watcher that falls further "
        "behind is ended with RESOURCE_EXHAUSTED [QM_EVENTS_BUFFER]",
    )
    p.add_argument(
        "--events-ttl-ms",
        type=int,
        default=ei("QM_EVENTS_TTL_MS", d.events_ttl_ms),
        help="how long a watched queue's job events stay on after this server last renewed its watch "
        "(renewed every third of it) [QM_EVENTS_TTL_MS]",
    )
    p.add_argument(
        "--redis-max-connections",
        type=int,
        default=ei("QM_REDIS_MAX_CONNECTIONS", d.redis_max_connections),
        help="Redis connections kept at most; more requests wait for one [QM_REDIS_MAX_CONNECTIONS]",
    )
    p.add_argument(
        "--redis-timeout-ms",
        type=int,
        default=ei("QM_REDIS_TIMEOUT_MS", d.redis_timeout_ms),
        help="longest wait for a Redis connect or reply [QM_REDIS_TIMEOUT_MS]",
    )
    p.add_argument(
        "--log-level",
        default=env.get("QM_LOG_LEVEL") or env.get("LOG_LEVEL") or d.log_level,
        help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default %(default)s) [QM_LOG_LEVEL, LOG_LEVEL]",
    )
    p.add_argument(
        "--http-listen",
        default=e("QM_HTTP_LISTEN", DEFAULT_HTTP_LISTEN),
        help="HOST:PORT of the HTTP port (/metrics for Prometheus), or 'off' "
        f"(default {DEFAULT_HTTP_LISTEN}) [QM_HTTP_LISTEN]",
    )
    p.add_argument("--embedded-port", type=int, default=ei("QM_EMBEDDED_PORT", 0), help=argparse.SUPPRESS)
    p.add_argument(
        "--janitor-interval-ms",
        type=int,
        default=ei("QM_JANITOR_INTERVAL_MS", d.janitor_interval_ms),
        help=argparse.SUPPRESS,
    )
    p.add_argument(
        "--bulk-idle-ms", type=int, default=ei("QM_BULK_IDLE_MS", d.bulk_idle_ms), help=argparse.SUPPRESS
    )
    p.add_argument("--test-crash-point", default=e("QM_TEST_CRASH_POINT", ""), help=argparse.SUPPRESS)
    security.add_arguments(p, e, ei, d)
    _show_defaults(p)
    a = p.parse_args(argv)
    try:
        a.listen = listen(a.listen)
    except ValueError as exc:
        p.error(f"--listen (QM_LISTEN): {exc}")
    security.check_arguments(a, p.error)
    # With --redis-sentinel, sentinel.problem (below) says why --redis-cluster does not go with it.
    cluster = url_problem(a.redis_url) or cluster_problem(
        a.redis_cluster and not a.redis_sentinel.strip(), a.redis_url
    )
    if cluster:
        p.error(cluster)
    prefix_problem = key_prefix_problem(a.key_prefix)
    if prefix_problem:
        p.error(prefix_problem)
    if a.durability not in DURABILITY_MODES:
        p.error(f"--durability (QM_DURABILITY) must be 'always' or 'everysec', not {a.durability!r}")
    if a.valkey_allocator not in ALLOCATORS:
        allocator = a.valkey_allocator
        p.error(f"--valkey-allocator (QM_VALKEY_ALLOCATOR) must be 'mimalloc' or 'libc', not {allocator!r}")
    try:
        http = http_listen(a.http_listen)
    except ValueError as exc:
        p.error(f"--http-listen (QM_HTTP_LISTEN): {exc}")
    for name, value in (
        ("--lease-ms", a.lease_ms),
        ("--max-payload-bytes", a.max_payload_bytes),
        ("--redis-timeout-ms", a.redis_timeout_ms),
        ("--priority-sweep-ms", a.priority_sweep_ms),
        ("--expiry-sweep-ms", a.expiry_sweep_ms),
        ("--events-buffer", a.events_buffer),
        ("--events-ttl-ms", a.events_ttl_ms),
        ("--redis-max-connections", a.redis_max_connections),
        ("--reaper-interval-ms", a.reaper_interval_ms),
    ):
        if value <= 0:
            p.error(f"{name} must be positive")
    for name, value in (
        ("--memory-estimate-ms", a.memory_estimate_ms),
        ("--shutdown-grace-ms", a.shutdown_grace_ms),
    ):
        if value < 0:
            p.error(f"{name} must be 0 or more")
    # logging takes any level name, but an unknown one would end the start in a traceback.
    if a.log_level.upper() not in LOG_LEVELS:
        levels = ", ".join(LOG_LEVELS)
        p.error(f"--log-level (QM_LOG_LEVEL, LOG_LEVEL) must be one of {levels}, not {a.log_level!r}")
    too_small = pool_too_small(a.redis_max_connections)
    if too_small:
        p.error(too_small)
    try:
        sentinel_values = sentinel.values(a, env)
    except ValueError as exc:
        p.error(str(exc))
    settings = Settings(
        listen=a.listen,
        redis_url=a.redis_url,
        redis_cluster=a.redis_cluster,
        data_dir=a.data_dir,
        durability=a.durability,
        valkey_allocator=a.valkey_allocator,
        key_prefix=a.key_prefix,
        lease_ms=a.lease_ms,
        max_payload_bytes=a.max_payload_bytes,
        shutdown_grace_ms=a.shutdown_grace_ms,
        reaper_interval_ms=a.reaper_interval_ms,
        priority_sweep_ms=a.priority_sweep_ms,
        expiry_sweep_ms=a.expiry_sweep_ms,
        memory_estimate_ms=a.memory_estimate_ms,
        events_buffer=a.events_buffer,
        events_ttl_ms=a.events_ttl_ms,
        redis_timeout_ms=a.redis_timeout_ms,
        redis_max_connections=a.redis_max_connections,
        log_level=a.log_level.upper(),
        embedded_port=a.embedded_port,
        janitor_interval_ms=a.janitor_interval_ms,
        bulk_idle_ms=a.bulk_idle_ms,
        test_crash_point=a.test_crash_point,
        http_listen=http,
        **sentinel_values,
        **security.values(a),
    )
    wrong = sentinel.problem(settings)
    if wrong:
        p.error(wrong)
    return settings
