/**
 * `QueueManager`'s calls on queues: their settings and state, their fairness groups, their metrics (read or
 * watched), their workers.
 */
import { JobCalls } from "./client-jobs.js";
import {
  fromTimestamp,
  groupInfoFromProto,
  metricsFromProto,
  pageFromProto,
  pauseTimeToProto,
  queueFromProto,
  stateNumber,
  toDuration,
  workerFromProto,
} from "./convert.js";
import { errorFromRpc, mapped } from "./errors.js";
import { JobEventStream, watchJobEventsRequest, type WatchJobEventsOptions } from "./events.js";
import {
  checkGroup,
  checkKeys,
  groupLimitsToProto,
  maintenanceWindowsToProto,
  pageRequest,
  queueConfigToProto,
  uint,
} from "./options.js";
import type {
  GroupInfo,
  GroupLimits,
  JobState,
  MaintenanceWindow,
  MetricsSnapshot,
  Page,
  PauseOptions,
  Queue,
  QueueConfig,
  QueueMetrics,
  WorkerInfo,
} from "./types.js";

// The keys each options object takes: another is refused, since a misspelt one would be ignored silently (a
// pause meant to lift by itself would last until resumed).
const PAUSE_KEYS: ReadonlySet<string> = new Set(["resumeAfterMs", "resumeAt"]);
const METRICS_KEYS: ReadonlySet<string> = new Set(["includeHistory"]);
const WATCH_METRICS_KEYS: ReadonlySet<string> = new Set(["intervalMs", "includeHistory", "includeWorkers", "signal"]);

/** Administers queues and reads their metrics and workers. */
export class QueueCalls extends JobCalls {
  /** The open job event streams, which `shutdown` ends. */
  protected readonly watches = new Set<JobEventStream>();

  /** Registers a queue, or updates an existing one's settings; returns it as stored. */
  async registerQueue(name: string, config: QueueConfig = {}): Promise<Queue> {
    const request = { name, config: queueConfigToProto(config) };
    const res = await mapped(() => this.client.registerQueue(request, this.callOptions));
    return queueFromProto(res.queue!);
  }

  async getQueue(name: string): Promise<Queue> {
    const res = await mapped(() => this.client.getQueue({ name }, this.callOptions));
    return queueFromProto(res.queue!);
  }

  /** Every registered queue, by name. */
  async listQueues(): Promise<Queue[]> {
    const res = await mapped(() => this.client.listQueues({}, this.callOptions));
    return res.queues.map(queueFromProto);
  }

  /**
   * Pauses a queue: jobs are still added, none start until resumed; running jobs finish. With
   * `resumeAfterMs` or `resumeAt` it resumes by itself then (once, whichever server gets there first, its
   * workers getting its jobs at once); pausing again replaces the time, `resumeQueue` clears it.
   */
  async pauseQueue(name: string, options: PauseOptions = {}): Promise<Queue> {
    checkKeys(options, PAUSE_KEYS, "pauseQueue options");
    const request = { name, ...pauseTimeToProto(options) };
    const res = await mapped(() => this.client.pauseQueue(request, this.callOptions));
    return queueFromProto(res.queue!);
  }

  async resumeQueue(name: string): Promise<Queue> {
    const res = await mapped(() => this.client.resumeQueue({ name }, this.callOptions));
    return queueFromProto(res.queue!);
  }

  /** Removes jobs of one state older than `graceMs`; returns how many. */
  async cleanQueue(name: string, graceMs: number, state: JobState, limit = 0): Promise<number> {
    const request = { name, grace: toDuration(graceMs, "graceMs"), state: stateNumber(state), limit: uint(limit, "limit") };
    const res = await mapped(() => this.client.cleanQueue(request, this.callOptions));
    return Number(res.removed);
  }

  /** Removes all waiting jobs (and delayed ones if asked); returns how many. */
  async drainQueue(name: string, includeDelayed = false): Promise<number> {
    const res = await mapped(() => this.client.drainQueue({ name, includeDelayed }, this.callOptions));
    return Number(res.removed);
  }

  /** Deletes a queue and all its jobs (`force`: even with active jobs); returns how many jobs. */
  async obliterateQueue(name: string, force = false): Promise<number> {
    const res = await mapped(() => this.client.obliterateQueue({ name, force }, this.callOptions));
    return Number(res.removed);
  }

  /**
   * A page of a queue's fairness groups (`JobOptions.group`) by name, each with its waiting and active jobs
   * and the limits that apply to it. A queue knows a group while it has jobs waiting or active, or limits of
   * its own (`QueueMetrics.groups` counts them). `pageSize` is 1 to 1,000 (default 100).
   */
  async listGroups(queueName: string, page: { pageSize?: number; pageToken?: string } = {}): Promise<Page<GroupInfo>> {
    const request = { queueName, ...pageRequest(page, "listGroups options") };
    const res = await mapped(() => this.client.listGroups(request, this.callOptions));
    return pageFromProto(res.groups.map(groupInfoFromProto), res);
  }

  /**
   * Gives one fairness group limits of its own, which replace the queue's `groupLimits` for it, and returns
   * the group as it is now. The limits are set together: one left out is none for this group (`{}` lifts
   * every per-group limit off it). The group need not have jobs; with limits of its own it is listed while
   * idle too.
   *
   * `maintenanceWindows` are the group's own recurring windows, set with its limits (none given: none):
   * while the server's clock is inside one, none of the group's jobs starts (as if paused; its running jobs
   * finish) while the queue's other groups run. A window never lifts `pauseGroup`, and `resumeGroup` inside
   * a window ends only that pause. At most 16, as a queue's.
   */
  async setGroupLimits(
    queueName: string,
    group: string,
    limits: GroupLimits,
    maintenanceWindows: MaintenanceWindow[] = [],
  ): Promise<GroupInfo> {
    const own = groupLimitsToProto(limits, "limits");
    own.maintenanceWindows = maintenanceWindowsToProto(maintenanceWindows);
    const request = { queueName, group: checkGroup(group, "group"), limits: own };
    const res = await mapped(() => this.client.setGroupLimits(request, this.callOptions));
    return groupInfoFromProto(res.group!);
  }

  /**
   * Removes a fairness group's own limits: the queue's `groupLimits` apply to it again (an idle group without
   * jobs is then forgotten). Returns the group as it is now.
   */
  async clearGroupLimits(queueName: string, group: string): Promise<GroupInfo> {
    const request = { queueName, group: checkGroup(group, "group"), clear: true };
    const res = await mapped(() => this.client.setGroupLimits(request, this.callOptions));
    return groupInfoFromProto(res.group!);
  }

  /**
   * Pauses one fairness group: its jobs are still added, but none starts until `resumeGroup`; its active jobs
   * run on and the queue's other groups keep taking their turns. The group need not have jobs (a paused group
   * is listed while idle too); pausing a paused group changes nothing. With `resumeAfterMs` or `resumeAt` it
   * resumes by itself then, as for `pauseQueue`. Returns the group as it is now.
   */
  async pauseGroup(queueName: string, group: string, options: PauseOptions = {}): Promise<GroupInfo> {
    checkKeys(options, PAUSE_KEYS, "pauseGroup options");
    const request = { queueName, group: checkGroup(group, "group"), ...pauseTimeToProto(options) };
    const res = await mapped(() => this.client.pauseGroup(request, this.callOptions));
    return groupInfoFromProto(res.group!);
  }

  /**
   * Resumes a paused fairness group: its waiting jobs take their turns again at once (an idle group without
   * jobs or limits of its own is then forgotten). Resuming a group that is not paused changes nothing.
   * Returns the group as it is now.
   */
  async resumeGroup(queueName: string, group: string): Promise<GroupInfo> {
    const request = { queueName, group: checkGroup(group, "group") };
    const res = await mapped(() => this.client.resumeGroup(request, this.callOptions));
    return groupInfoFromProto(res.group!);
  }

  async getQueueMetrics(name: string, options: { includeHistory?: boolean } = {}): Promise<QueueMetrics> {
    checkKeys(options, METRICS_KEYS, "getQueueMetrics options");
    const request = { name, includeHistory: options.includeHistory ?? false };
    const res = await mapped(() => this.client.getQueueMetrics(request, this.callOptions));
    return metricsFromProto(res.metrics!);
  }

  async getAllMetrics(options: { includeHistory?: boolean } = {}): Promise<QueueMetrics[]> {
    checkKeys(options, METRICS_KEYS, "getAllMetrics options");
    const request = { includeHistory: options.includeHistory ?? false };
    const res = await mapped(() => this.client.getAllMetrics(request, this.callOptions));
    return res.metrics.map(metricsFromProto);
  }

  /**
   * Yields a snapshot of the queues' metrics at once, then every `intervalMs` (100 to 60,000; default
   * 1,000), until you stop iterating (`break`) or `signal` fires (the loop then ends, with no error). Pushed
   * by the server: no polling.
   * `queues` is a name or a list of names (`NotFoundError` if one is unknown); none watches every queue,
   * those registered later included.
   */
  async *watchMetrics(
    queues?: string | string[],
    options: { intervalMs?: number; includeHistory?: boolean; includeWorkers?: boolean; signal?: AbortSignal } = {},
  ): AsyncGenerator<MetricsSnapshot, void, undefined> {
    checkKeys(options, WATCH_METRICS_KEYS, "watchMetrics options");
    const request = {
      queueNames: queues === undefined ? [] : typeof queues === "string" ? [queues] : [...queues],
      interval: toDuration(options.intervalMs ?? 1_000, "intervalMs"),
      includeHistory: options.includeHistory ?? false,
      includeWorkers: options.includeWorkers ?? false,
    };
    // Leaving the loop (or the caller's signal) cancels the call, so the server stops sending.
    const call = new AbortController();
    const stop = () => call.abort(options.signal?.reason);
    options.signal?.addEventListener("abort", stop, { once: true });
    if (options.signal?.aborted) {
      stop();
    }
    try {
      for await (const res of this.client.watchMetrics(request, { signal: call.signal })) {
        yield { time: fromTimestamp(res.time), metrics: res.metrics.map(metricsFromProto), workers: res.workers.map(workerFromProto) };
      }
    } catch (err) {
      if (options.signal?.aborted) {
        return; // the caller's own signal ends the stream, as leaving the loop does
      }
      throw errorFromRpc(err);
    } finally {
      options.signal?.removeEventListener("abort", stop);
      call.abort();
    }
  }

  /**
   * Follows a queue's job events live (BullMQ's QueueEvents): added, waiting, active, progress, completed,
   * failed, retrying, delayed, stalled, cancelled, removed, expired. The call starts at once; `await
   * events.ready()` returns once the server watches the queue, so every event from then on is in the
   * stream; then `for await (const ev of events)`. Live and at most once, never a replay (`getJob` and
   * `waitForJob` give a job's durable state); a watcher that falls behind the server's buffer ends with
   * `ResourceExhaustedError`. Leaving the loop, `events.close()`, `options.signal` or `shutdown` ends it.
   * An unknown event type, an empty job name or a bad queue name throws before the call (docs/events.md).
   */
  watchJobEvents(queueName: string, options: WatchJobEventsOptions = {}): JobEventStream {
    const request = watchJobEventsRequest(queueName, options);
    const stream = new JobEventStream(this.connection.transport, request, options.signal, () => this.watches.delete(stream));
    if (!stream.closed) {
      this.watches.add(stream);
    }
    return stream;
  }

  /** The workers connected to any server (taking jobs of `queueName`, if given). */
  async listWorkers(queueName = ""): Promise<WorkerInfo[]> {
    const res = await mapped(() => this.client.listWorkers({ queueName }, this.callOptions));
    return res.workers.map(workerFromProto);
  }
}
