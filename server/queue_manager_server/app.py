"""The server process: what starts in which order, and how it stops.

Start: Redis (embedded Valkey if none configured; the sentinels' primary with --redis-sentinel) → checks →
engine scripts → gRPC services → loops → HTTP port (its routes may call the gRPC port).
Stop (reverse, so nothing acknowledged is dropped): health NOT_SERVING → workers told to drain and given
the grace period → leases still held released to waiting → gRPC server stopped → HTTP port and metrics
sampler stopped → loops stopped → Redis closed → embedded Valkey stopped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from queue_manager.v1 import (
    queue_service_pb2,
    queue_service_pb2_grpc,
    test_clock_service_pb2,
    test_clock_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from queue_manager_server import bind, reflection, security, sentinel
from queue_manager_server.components.aging import PrioritySweep
from queue_manager_server.components.base import Component
from queue_manager_server.components.event_watch import EventWatchRenewal
from queue_manager_server.components.expiry import ExpirySweep
from queue_manager_server.components.maintenance import HealthMonitor, Janitor, Reaper
from queue_manager_server.components.metrics_sampler import MetricsSampler
from queue_manager_server.components.notifier import Notifier
from queue_manager_server.components.pause_timer import PauseTimer
from queue_manager_server.components.promoter import Promoter
from queue_manager_server.components.scheduler import Scheduler
from queue_manager_server.components.stream_guard import StreamGuard
from queue_manager_server.components.timeouts import Timeouts
from queue_manager_server.components.valkey_keeper import ValkeyKeeper
from queue_manager_server.components.worker_registry import WorkerRegistry
from queue_manager_server.config import Settings, cluster_problem, pool_too_small, test_clock_problem
from queue_manager_server.datadir import DataDirLock, DataDirLocked
from queue_manager_server.embedded import (
    JOB_HASH_SETTING,
    JOB_HASH_VALUE_MAX,
    EmbeddedValkey,
    EmbeddedValkeyError,
)
from queue_manager_server.engine import Engine
from queue_manager_server.engine.clients import Client, Gate, GatedCluster, SentinelPool
from queue_manager_server.engine.clock import TestClockStorage
from queue_manager_server.engine.control import Control
from queue_manager_server.engine.engine import HELD_CONNECTIONS
from queue_manager_server.engine.packing import hiredis_packing
from queue_manager_server.engine.store import ClusterStore
from queue_manager_server.grpc_metrics import GrpcMetrics
from queue_manager_server.http import HttpBindError, HttpContext, HttpServer, build_app, check_bindable
from queue_manager_server.services.auth_interceptor import AuthInterceptor
from queue_manager_server.services.dispatcher import Dispatcher
from queue_manager_server.services.event_pushes import ClusterPushes
from queue_manager_server.services.flows import Flows
from queue_manager_server.services.limits_interceptor import LimitsInterceptor
from queue_manager_server.services.long_pushes import LongPushes
from queue_manager_server.services.queue_service import QueueService
from queue_manager_server.services.test_clock import TestClockService
from queue_manager_server.services.worker_control import WorkerControl
from queue_manager_server.services.workers import WorkerService
from queue_manager_server.services.workflows import Workflows

log = logging.getLogger("queue_manager_server.app")

SERVICE_NAMES = [
    queue_service_pb2.DESCRIPTOR.services_by_name["QueueService"].full_name,
    worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
]
# Served by every server (a server on real time refuses its calls: services/test_clock.py), listed by
# reflection; not a service health reports on.
TEST_CLOCK_SERVICE = test_clock_service_pb2.DESCRIPTOR.services_by_name["TestClockService"].full_name
# Policies that never evict keys; anything else can silently drop jobs.
SAFE_POLICIES = {"noeviction"}


class StartupError(Exception):
    """The server cannot start; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class _Node:
    """A Redis server the start-up checks read: its name in messages, and the arguments that send a
    command to it (a Cluster primary's target_nodes; none for one server)."""

    name: str
    target: dict[str, Any]


class App:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedded: EmbeddedValkey | None = None
        self.lock: DataDirLock | None = None
        # What "nothing acknowledged is lost" means with this Redis (banner and log).
        self.durability = ""
        self.redis: Client | None = None
        self.engine: Engine | None = None
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.components: list[Component] = []
        self.notifier: Notifier | None = None
        self.workers: WorkerService | None = None
        self.queue_service: QueueService | None = None
        self.dispatcher: Dispatcher | None = None
        self.worker_control: WorkerControl | None = None
        # This process's gRPC call counters (grpc_server_* on /metrics), the metrics stream's sampler and
        # the HTTP port (None when off).
        self.grpc_metrics = GrpcMetrics()
        self.sampler: MetricsSampler | None = None
        self.http: HttpServer | None = None
        self.health = health_aio.HealthServicer()
        # Token file and TLS (security.py); with TLS the HTTP port's own calls and the web dashboard's
        # sessions use a private unix socket (internal_address), authenticated like any call.
        self.security: security.Prepared | None = None
        self.internal_address = ""
        self._socket_dir: str | None = None
        self._workflows: Workflows | None = None
        self._stopped = asyncio.Event()
        self._stopping = False
        # One test-clock move at a time: each one's catch-up sees the clock it moved (advance_clock).
        self._clock_lock = asyncio.Lock()

    @property
    def address(self) -> str:
        host = self.settings.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        s = self.settings
        # parse_args refuses such a pool and cluster settings too; this is for Settings made in code.
        too_small = (
            pool_too_small(s.redis_max_connections)
            or sentinel.problem(s)
            or cluster_problem(s.redis_cluster, s.redis_url)
            or test_clock_problem(s.test_clock, s.redis_cluster)
        )
        if too_small:
            raise StartupError(too_small)
        try:
            self.security = guard = security.prepare(s)
        except security.SecurityError as exc:
            raise StartupError(str(exc)) from None
        interceptors: list[grpc.aio.ServerInterceptor] = [
            self.grpc_metrics.interceptor,
            LimitsInterceptor(s.max_concurrent_rpcs, s.max_worker_streams),
        ]
        if guard.auth is not None:
            interceptors.append(AuthInterceptor(guard.auth, self._run_queues))
        # The port first: a busy port is the commonest start-up mistake, and then nothing else should
        # have started (no Valkey, no log lines) before the one clear error.
        self.server = grpc.aio.server(options=self._grpc_options(), interceptors=interceptors)
        try:
            self.port = bind.add_port(self.server, s.listen, guard.credentials)
        except bind.BindError as exc:
            raise StartupError(f"cannot listen on {s.listen}: {exc}") from None
        self.internal_address = self.address
        if guard.credentials is not None:
            self._socket_dir = tempfile.mkdtemp(prefix="qm-")  # mode 0700: this user's processes only
            self.internal_address = f"unix:{self._socket_dir}/grpc.sock"
            bind.add_insecure_port(self.server, self.internal_address)
        if s.http_listen:
            try:
                check_bindable(s.http_listen)
            except HttpBindError as exc:
                raise StartupError(f"cannot serve HTTP on {s.http_listen}: {exc}") from None
        url = s.redis_url
        if url is None and not s.redis_sentinel:
            url = await self._start_embedded()
        self.redis = self._connect(url)
        await self._check_redis(external=self.embedded is None)
        engine = self.engine = Engine(self.redis, s.key_prefix, s.test_clock)
        await engine.scripts.load_all()
        for queue, moved in (await engine.migrate()).items():
            log.info("waiting jobs moved into per-priority lists", extra={"queue": queue, "jobs": moved})
        workflows = self._workflows = Workflows(engine, s.max_payload_bytes)
        workflows.cancel_job = Control(engine).cancel_job  # cancel_workflow stops its steps' jobs
        flows = Flows(engine, workflows, s.max_payload_bytes, s.test_crash_point)
        engine.flow_hook = flows.hand_off
        pushes: ClusterPushes | LongPushes = LongPushes(engine, s.test_crash_point)
        if isinstance(engine.store, ClusterStore):  # external events go through records there
            pushes = ClusterPushes(engine, s.test_crash_point)

        self.dispatcher = Dispatcher(engine, s.lease_ms)
        self.workers = WorkerService(
            engine, self.dispatcher, s.server_id, s.lease_ms, s.heartbeat_ms, s.max_payload_bytes
        )
        self.workers.max_credits, self.workers.max_buffer = s.max_worker_credits, s.max_worker_buffer
        self.queue_service = QueueService(engine, s.max_payload_bytes, workflows)
        if isinstance(pushes, ClusterPushes):
            self.queue_service.cluster_pushes = pushes
        else:
            self.queue_service.long_pushes = pushes
        self.queue_service.adds.listener = self.dispatcher  # adds through this server are claimed at once
        self.queue_service.max_bulk_bytes = s.max_bulk_bytes
        self.worker_control = WorkerControl(
            engine, self.dispatcher, self.workers.registry, s.server_id, s.heartbeat_ms
        )
        self.queue_service.worker_control = self.worker_control
        qs = self.queue_service
        qs.lease_ms, qs.server_id, qs.registry = s.lease_ms, s.server_id, self.workers.registry
        qs.exemplars = self.dispatcher.exemplars
        qs.lease_ended = self.dispatcher.lease_ended
        watchers = self.queue_service.event_watchers
        watchers.limit, watchers.ttl_ms = s.events_buffer, s.events_ttl_ms
        self.queue_service.metrics_reader.memory_estimate_ms = s.memory_estimate_ms
        self.sampler = MetricsSampler(self.queue_service.metrics_reader)
        self.queue_service.watch_source = self.sampler
        queue_service_pb2_grpc.add_QueueServiceServicer_to_server(self.queue_service, self.server)
        worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(self.workers, self.server)
        test_clock_service_pb2_grpc.add_TestClockServiceServicer_to_server(
            TestClockService(engine, self.advance_clock), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_reflection(
            [*SERVICE_NAMES, TEST_CLOCK_SERVICE, "grpc.health.v1.Health", reflection.SERVICE_NAME],
            self.server,
        )
        await self.server.start()
        if self.lock is not None:
            self.lock.record(listen=self.address)

        promoter = Promoter(engine)
        scheduler = Scheduler(engine)
        pause_timer = PauseTimer(engine)
        timeouts = Timeouts(engine, s.reaper_interval_ms / 1000)
        self.dispatcher.deadline_hook = timeouts.schedule
        self.queue_service.deadline_hook = timeouts.schedule  # fetched jobs' timeouts too (services/pull.py)
        self.notifier = Notifier(
            self.redis,
            engine.channel,
            self.dispatcher,
            promoter,
            scheduler,
            self.queue_service.waiters,
            watchers,
            self.worker_control,
            self.queue_service.pulls,
            pause_timer,
        )
        self.notifier.start()
        monitor = HealthMonitor(engine, self.health, SERVICE_NAMES, interval=2.0)
        await monitor.set(True)
        self.components = [
            Reaper(engine, s.reaper_interval_ms / 1000, s.lease_ms),
            timeouts,
            promoter,
            pause_timer,
            PrioritySweep(engine, s.priority_sweep_ms / 1000),
            ExpirySweep(engine, s.expiry_sweep_ms / 1000),
            scheduler,
            Janitor(engine, flows, workflows, s.janitor_interval_ms / 1000, s.bulk_idle_ms, pushes),
            monitor,
            WorkerRegistry(self.workers.registry, self.dispatcher, s.server_id, s.heartbeat_ms),
            StreamGuard(self.dispatcher, s.worker_stall_ms),
            EventWatchRenewal(self.queue_service.job_events, watchers),
        ]
        if self.embedded is not None:
            # Stopped with the other loops, so before Valkey itself is (a stop is not a death to undo).
            self.components.append(ValkeyKeeper(self.embedded, self._valkey_restarted))
        for c in self.components:
            c.start()
        await asyncio.wait_for(self.notifier.ready.wait(), 10)
        if s.http_listen:
            await self._start_http(engine)
        log.info(
            "server started",
            extra={"address": self.address, "server_id": s.server_id, "key_prefix": s.key_prefix},
        )

    async def advance_clock(self, ms: int) -> None:
        """Moves the test clock `ms` forward (0: not at all) and has the server do at once what fell due
        (clock_moved); one move at a time. Only on a server made with Settings.test_clock."""
        assert self.engine is not None, "the server has not started"
        async with self._clock_lock:
            if ms > 0:
                await TestClockStorage(self.engine).advance(ms)
            await self.clock_moved()

    async def clock_moved(self) -> None:
        """The test clock moved forward (queue_manager_server.testing): each loop does at once what fell due
        by Redis's clock (in their start order: time-outs, then delayed jobs, timed pauses, priority bounds,
        expiries, schedules, retention), then every served queue claims again. Returns once the loops are
        done."""
        for c in self.components:
            await c.clock_moved()
        if self.dispatcher is not None:
            self.dispatcher.clock_moved()

    async def _start_http(self, engine: Engine) -> None:
        assert self.queue_service is not None
        s = self.settings
        reader = self.queue_service.metrics_reader
        auth = self.security.auth if self.security else None
        exemplars = self.dispatcher.exemplars if self.dispatcher else None
        ctx = HttpContext(
            s, engine, reader, self.grpc_metrics, lambda: self.internal_address, auth, exemplars
        )
        self.http = HttpServer(build_app(ctx), s.http_listen)
        try:
            await self.http.start()
        except HttpBindError as exc:
            self.http = None
            raise StartupError(f"cannot serve HTTP on {s.http_listen}: {exc}") from None

    @property
    def http_address(self) -> str:
        """HOST:PORT of the HTTP port ("" when off)."""
        if self.http is None:
            return ""
        return f"{self.settings.http_listen.rsplit(':', 1)[0]}:{self.http.port}"

    async def _start_embedded(self) -> str:
        """Locks the data directory, then starts Valkey in it; returns its URL."""
        s = self.settings
        self.lock = DataDirLock(s.data_dir)
        try:
            await self.lock.acquire(listen=s.listen)
        except DataDirLocked as exc:
            raise StartupError(str(exc)) from None
        except OSError as exc:
            raise StartupError(f"cannot lock the data directory {s.data_dir}: {exc}") from None
        # Valkey is forked on this thread (the event loop's, which lives as long as the server), never in
        # asyncio.to_thread: its parent-death signal fires when the *thread* that forked it exits, and an
        # executor thread can be retired while the server still runs.
        try:
            self.embedded = EmbeddedValkey(
                self.lock.data_dir, s.embedded_port, s.durability, self.lock.fd, s.valkey_allocator
            )
            url = await self.embedded.start()
        except EmbeddedValkeyError as exc:
            raise StartupError(f"cannot start the embedded Valkey in {s.data_dir}: {exc}") from None
        self.lock.record(valkey_pid=self.embedded.pid, valkey_port=self.embedded.port)
        return url

    def _valkey_restarted(self, pid: int) -> None:
        """The embedded Valkey runs again (components/valkey_keeper.py): the lock file names its new pid."""
        if self.lock is not None:
            self.lock.record(valkey_pid=pid)

    def _connect(self, url: str | None) -> Client:
        """The Redis client: one server's over a blocking pool, (--redis-sentinel) the sentinels' primary's
        over a blocking pool of sentinel-managed connections, or (--redis-cluster) a Cluster's behind a
        gate."""
        s = self.settings
        timeout = s.redis_timeout_ms / 1000
        if url is None:
            return sentinel.connect(s, _retry_once())
        if s.redis_cluster:
            # A Cluster keeps a pool per node that fails past its size instead of waiting, so calls take turns
            # at a gate (engine/clients.py): each turn uses at most one connection of each node, and there are
            # as many as the pool's size less those the engine holds on each node (engine/nodes.py) and one
            # for the event subscription (components/notifier.py).
            return GatedCluster.from_url(
                url,
                gate=Gate(s.redis_max_connections - 1 - HELD_CONNECTIONS, timeout),
                max_connections=s.redis_max_connections,
                decode_responses=False,
                socket_keepalive=True,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                **security.redis_tls_kwargs(s),
            )
        # A blocking pool: a burst of concurrent requests waits (up to the Redis timeout) for a free
        # connection instead of failing with "Too many connections", which redis-py's default pool does
        # past its limit.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=s.redis_max_connections,
            timeout=timeout,
            decode_responses=False,
            # TCP keepalive finds a Redis gone behind a half-open connection; a unix socket has none to set.
            **({} if url.startswith("unix:") else {"socket_keepalive": True}),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=_retry_once(),
            **security.redis_tls_kwargs(s),
        )
        pool.connection_class = hiredis_packing(pool.connection_class)
        return Redis.from_pool(pool)  # the client owns the pool: closing it closes the pool

    def _grpc_options(self) -> list[tuple[str, int]]:
        size = self.settings.max_message_bytes
        return [
            ("grpc.max_receive_message_length", size),
            ("grpc.max_send_message_length", size),
            # Idle worker streams must survive: accept client pings every 5 s or more, even with no calls.
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_ping_strikes", 0),
            # Server-side pings find dead peers behind half-open connections.
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            # grpc-core waits for a ping's answer this long, whatever keepalive_timeout_ms says (60 s by
            # default): without it a worker whose connection went silent was noticed after 30 + 60 s.
            ("grpc.http2.ping_timeout_ms", 10_000),
            ("grpc.so_reuseport", 0),
            # Limits (docs/security.md): HTTP/2 streams one connection may open at once, and the largest
            # request metadata (an authorization header is about 60 bytes).
            ("grpc.max_concurrent_streams", self.settings.max_streams_per_connection),
            # …counted as HTTP/2 counts them (streams open), which the client sees and waits for. grpc-core's
            # default counts streams until the server has freed them, later than the client learns they
            # ended: a burst at the limit was refused (RST_STREAM REFUSED_STREAM, UNAVAILABLE to the caller:
            # 65 of 1,100 register_queue calls started at once on one channel).
            ("grpc.http.overload_protection", 0),
            ("grpc.max_metadata_size", 16 * 1024),
        ]

    async def _run_queues(self, run_id: str) -> list[str] | None:
        """The queues of a stored workflow run's steps (CancelWorkflow's check); None if unreadable."""
        if self._workflows is None:
            return None
        try:
            run = await self._workflows.get(run_id)
        except Exception:
            return None  # the handler answers (NOT_FOUND, INVALID_ARGUMENT…) and writes nothing
        return [step.queue_name for step in run.steps]

    async def _check_redis(self, external: bool) -> None:
        assert self.redis is not None
        try:
            await self.redis.ping()
        except Exception as exc:
            if self.settings.redis_sentinel:
                found = await sentinel.diagnose(self.settings)
                raise StartupError(
                    found or f"cannot reach the primary the sentinels name: {exc}; check REDIS_PASSWORD"
                ) from None
            hint = (
                " (is it a Cluster node? --redis-cluster expects one)" if self.settings.redis_cluster else ""
            )
            raise StartupError(f"cannot reach Redis{hint}: {exc}; check REDIS_URL / REDIS_HOST") from None
        if not external:
            assert self.embedded is not None
            mode = self.embedded.durability
            strong, promise = persistence_promise("yes", mode, "")
            self._announce_durability(f"{mode} (embedded Valkey, appendfsync {mode}): {promise}", strong)
            return
        primaries = self._primaries()
        for node in primaries:
            await self._check_node(node)
        await self._check_persistence(primaries)
        await self._check_hash_encoding(primaries)

    def _primaries(self) -> list[_Node]:
        """Where the start-up checks look: the one server, or every primary of a Cluster (each has its own
        settings, and holds the queues of its slots)."""
        if isinstance(self.redis, RedisCluster):
            return [
                _Node(f"Redis cluster primary {n.name}", {"target_nodes": n})
                for n in self.redis.get_primaries()
            ]
        pool = self.redis.connection_pool if self.redis is not None else None
        if isinstance(pool, SentinelPool) and pool.master_address is not None:
            host, port = pool.master_address
            return [_Node(f"Redis primary {host}:{port} (sentinel master {pool.service_name!r})", {})]
        return [_Node("Redis", {})]

    async def _check_node(self, node: _Node) -> None:
        """Refuses a Redis older than the scripts need (one that refuses INFO, an ACL, is not checked), one
        that is a Cluster node while --redis-cluster is off, and an eviction policy that would lose jobs."""
        assert self.redis is not None
        try:
            info: dict[str, Any] = await self.redis.info("server", **node.target)
            enabled = (await self.redis.info("cluster", **node.target)).get("cluster_enabled")
        except Exception:
            info, enabled = {}, None
        problem = redis_version_problem(str(info.get("redis_version", "")))
        if problem:
            raise StartupError(problem)
        if enabled in (1, "1") and not self.settings.redis_cluster:
            raise StartupError(
                "this Redis is a node of a Redis/Valkey Cluster: start the server with --redis-cluster "
                "(QM_REDIS_CLUSTER=1) so that it reaches every node (docs/operations.md)"
            )
        policy = await self._config_value(node, "maxmemory-policy")
        if policy is None:
            log.warning(f"cannot read maxmemory-policy of {node.name}; make sure it is noeviction")
        elif policy and policy not in SAFE_POLICIES:
            raise StartupError(
                f"{node.name} maxmemory-policy is {policy!r}, which evicts keys and would lose jobs; "
                "set it to 'noeviction' (CONFIG SET maxmemory-policy noeviction)"
            )

    async def _config_value(self, node: _Node, name: str) -> str | None:
        """One CONFIG GET value; None when CONFIG is refused (managed Redis often disables it)."""
        assert self.redis is not None
        try:
            reply: dict[Any, Any] = await self.redis.config_get(name, **node.target)
        except Exception:
            return None
        raw = reply.get(name.encode(), reply.get(name, b""))
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def _check_persistence(self, primaries: list[_Node]) -> None:
        """Logs what the configured Redis's persistence makes of the promise (a Cluster's: its weakest
        primary's, named); never refuses to start."""
        found = [await self._persistence(node) for node in primaries]
        strong, line = next((f for f in found if not f[0]), found[0])
        if len(primaries) > 1 and strong:  # every primary keeps the promise in full: say so once
            line = line.replace(primaries[0].name, f"Redis Cluster ({len(primaries)} primaries alike)")
        if self.settings.redis_sentinel:  # what the primary keeps, a failover may not: docs/durability.md
            strong, line = False, f"{line}; {await self._failover_promise(primaries[0])}"
        self._announce_durability(line, strong)

    async def _failover_promise(self, node: _Node) -> str:
        """What a Sentinel failover can lose, from the primary's min-replicas-to-write/-max-lag."""
        names = ("min-replicas-to-write", "min-replicas-max-lag")
        replicas, lag = [await self._config_value(node, n) for n in names]
        if replicas is None:
            return (
                "a failover can lose the acknowledged writes the promoted replica had not received "
                "(replication is asynchronous; see docs/durability.md)"
            )
        if replicas in ("", "0"):
            return (
                "a failover can lose the acknowledged writes the promoted replica had not received, with no "
                "bound (min-replicas-to-write is 0; see docs/durability.md)"
            )
        return (
            f"a failover can lose the acknowledged writes the promoted replica had not received: up to about "
            f"{lag} s of them (min-replicas-to-write {replicas}, min-replicas-max-lag {lag})"
        )

    async def _persistence(self, node: _Node) -> tuple[bool, str]:
        """Whether the node's persistence keeps the promise in full, and what it makes of it, in words."""
        values = [await self._config_value(node, n) for n in ("appendonly", "appendfsync", "save")]
        if None in values:
            return False, (
                f"cannot be verified, {node.name} refuses CONFIG GET; nothing acknowledged is lost only if "
                "it runs appendonly yes with appendfsync always (see docs/durability.md)"
            )
        appendonly, appendfsync, save = (v or "" for v in values)
        strong, promise = persistence_promise(appendonly, appendfsync, save)
        shown = f"appendonly {appendonly}, appendfsync {appendfsync}, save {save or '(none)'}"
        return strong, f"configured {node.name} ({shown}): {promise}"

    async def _check_hash_encoding(self, primaries: list[_Node]) -> None:
        """Logs a hint when the configured Redis keeps job hashes compact only up to a smaller value size than
        the embedded Valkey does (embedded.JOB_HASH_ENCODING); never refuses to start."""
        name, ours = JOB_HASH_SETTING, JOB_HASH_VALUE_MAX
        for node in primaries:
            # Redis 6.2 knows the setting by its older name only (CONFIG GET then answers nothing).
            value = await self._config_value(node, name) or await self._config_value(
                node, "hash-max-ziplist-value"
            )
            if value and value.isdigit() and int(value) < ours:
                log.info(
                    f"{node.name} keeps a job's hash compact only while each of its values is at most "
                    f"{value} bytes ({name}); a job whose data, result or error is longer takes ~200 bytes "
                    f"more. {name} {ours} avoids that (docs/operations.md)"
                )
                return

    def _announce_durability(self, line: str, strong: bool) -> None:
        """One log line (a warning when weaker than the promise); the banner repeats it."""
        self.durability = line
        log.log(logging.INFO if strong else logging.WARNING, f"durability: {line}")

    async def stop(self) -> None:
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        # A start that failed before anything ran (a busy port) stops silently: its one error is enough.
        quiet = self.redis is None and self.embedded is None
        if not quiet:
            log.info("server stopping")
        grace = self.settings.shutdown_grace_ms / 1000
        for name in ["", *SERVICE_NAMES]:
            await self.health.set(name, health_pb2_not_serving())
        if self.queue_service is not None:
            self.queue_service.pulls.close()  # long polls answer now, with nothing
        if self.workers is not None:
            await self.workers.drain(grace)
        if self.server is not None:
            await self.server.stop(grace=1.0)
        if self.workers is not None:
            await self.workers.streams_ended(self.settings.redis_timeout_ms / 1000)
        if self.http is not None:
            await self.http.stop()
        if self.sampler is not None:
            await self.sampler.stop()
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        if self.queue_service is not None:
            # Bulk streams past their commit finish publishing, and coalesced adds their write.
            await self.queue_service.bulk.wait_background()
            await self.queue_service.adds.wait_idle(self.settings.redis_timeout_ms / 1000)
            await self.queue_service.pulls.wait_released()
        for c in self.components:
            await c.stop()
        if self.notifier is not None:
            await self.notifier.stop()  # no control request comes in after this
        if self.worker_control is not None:
            await self.worker_control.stop()
        if self.redis is not None:
            await self.redis.aclose()
        if self.embedded is not None:
            await self.embedded.stop()
        if self.lock is not None:  # after Valkey has exited: it holds the lock too
            self.lock.release()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        if not quiet:
            log.info("server stopped")
        self._stopped.set()

    def hurry(self) -> None:
        """Cuts the shutdown grace short (a second signal): held leases are released at once."""
        if self.workers is not None:
            self.workers.hurry.set()
            self.workers.progress.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()


# The scripts pop several waiting jobs in one LPOP (a count: Redis 6.2). Any Valkey reports 7.2 or later.
MIN_REDIS_VERSION = (6, 2)


def redis_version_problem(version: str) -> str:
    """What is wrong with a Redis of this ``redis_version`` (INFO server), or "" when it will do."""
    try:
        found = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return ""
    if len(found) < 2 or found >= MIN_REDIS_VERSION:
        return ""
    need = ".".join(str(p) for p in MIN_REDIS_VERSION)
    return (
        f"Redis {version} is too old: {need} or later is needed (or any Valkey); upgrade it or point "
        "REDIS_URL at another"
    )


def persistence_promise(appendonly: str, appendfsync: str, save: str) -> tuple[bool, str]:
    """What "nothing acknowledged is lost" becomes with these persistence settings.

    Returns:
        Whether the promise holds in full, and what it becomes, in words.
    """
    if appendonly == "yes" and appendfsync == "always":
        return True, "nothing acknowledged is lost, even on a machine crash (each write is fsynced first)"
    if appendonly == "yes" and appendfsync == "everysec":
        return False, (
            "a crash of the Redis/Valkey process can lose the last acknowledged writes (those answered "
            "while a background fsync was running, at most about 2 s of them); a machine crash, about the "
            "last 1-2 s"
        )
    if appendonly == "yes":
        return False, (
            f"a crash of the Redis process loses nothing acknowledged; with appendfsync {appendfsync} a "
            "machine crash can lose the last ~30 s (the kernel writes the file when it likes)"
        )
    if save.strip():
        return False, f"appendonly is off: a restart loses all since the last RDB snapshot (save {save})"
    return False, "persistence is off: a Redis restart loses every job"


def _retry_once() -> Retry:
    """One quick retry on a broken connection: after Redis restarts (or, with Sentinel, fails over) a pooled
    connection to the old process fails on first use (the new one never saw the command, so sending it again
    is safe). Timeouts are never retried: the command may still be running."""
    return Retry(ExponentialBackoff(cap=0.1, base=0.01), 1, supported_errors=(RedisConnectionError,))


def health_pb2_not_serving() -> int:
    from grpc_health.v1 import health_pb2

    return int(health_pb2.HealthCheckResponse.NOT_SERVING)


def _tool(name: str) -> str:
    """How to call a console script installed next to this interpreter (the venv may not be on PATH)."""
    beside = Path(sys.executable).parent / name
    if shutil.which(name) == str(beside) or not beside.exists():
        return name
    return os.path.relpath(beside) if not os.path.relpath(beside).startswith("..") else str(beside)


def _installed(name: str) -> bool:
    return shutil.which(name) is not None or (Path(sys.executable).parent / name).exists()


def print_banner(app: App) -> None:
    a = app.address
    where = f"embedded Valkey in {app.embedded.data_dir}" if app.embedded else "configured Redis"
    if app.settings.redis_cluster:
        where = "configured Redis/Valkey Cluster"
    if app.settings.redis_sentinel:
        where = (
            f"the primary of sentinel master {app.settings.redis_sentinel_master!r} "
            f"(sentinels {app.settings.redis_sentinel})"
        )
    durability = f"Durability: {app.durability}.\n" if app.durability else ""
    h = app.http_address
    http = (
        f"Dashboard on http://{h}/, JSON API on http://{h}/api (docs/http-api.md), "
        f"Prometheus metrics on http://{h}/metrics.\n"
        if h
        else ""
    )
    qm, grpcurl = _tool("qm"), _tool("grpcurl")
    guard = app.security
    tls = guard is not None and guard.credentials is not None
    transport = ("mutual TLS" if guard is not None and guard.mutual else "TLS") if tls else "plaintext"
    if guard is not None and guard.auth is not None:
        transport += f", {len(guard.auth.names)} token(s) from {app.settings.auth_file}"
    # grpcurl comes with `make dev`, not `make run` / `pip install`: suggest it only where it is installed.
    grpcurl_line = f"  {grpcurl} -plaintext {a} list\n" if _installed("grpcurl") and not tls else ""
    # The commands below fail over TLS or with tokens unless the client is told how (docs/security.md).
    client_env = ""
    if tls:
        client_env += "  export QM_TLS_CA=<PEM CA bundle that signed --tls-cert>\n"
    if guard is not None and guard.mutual:
        client_env += (
            "  export QM_TLS_CERT=<client certificate --tls-client-ca signed> QM_TLS_KEY=<its key>\n"
        )
    if guard is not None and guard.auth is not None:
        client_env += (
            "  export QM_TOKEN_FILE=<file holding an admin token of --auth-file (qm auth new-token)>\n"
        )
    print(
        f"Queue Manager listening on {a} (gRPC, {transport}), storing jobs in {where}.\n"
        f"{durability}"
        f"{http}"
        f"Try it:\n"
        f"{grpcurl_line}"
        f"  export QM_SERVER={a}\n"
        f"{client_env}"
        f"  {qm} queues register demo && {qm} add demo hello --data '{{\"x\": 1}}'\n"
        f"  {qm} queues metrics demo\n"
        f"Stop with Ctrl-C (graceful shutdown).",
        file=sys.stderr,
        flush=True,
    )
