/**
 * The public shapes of the client: plain objects with camelCase fields, durations in milliseconds and
 * times as `Date`. Generated protobuf types stop at convert.ts and options.ts; users never see them.
 */

/** Priority of a job: a lower number runs first, FIFO within a level. */
export enum JobPriority {
  CRITICAL = 1,
  HIGH = 2,
  NORMAL = 3,
  LOW = 4,
  BACKGROUND = 5,
}

/** A priority given as the enum, its number, or its name in any case ("high"). */
export type PriorityLike = JobPriority | number | keyof typeof JobPriority | Lowercase<keyof typeof JobPriority>;

/** A level that a priority bound can cap: every level but CRITICAL (which runs first already). */
export type BoundedPriority = "high" | "normal" | "low" | "background";

/**
 * Priority bounds (anti-starvation aging) to register: levels (a `JobPriority`, 2 to 5 or a name in any case)
 * to the longest a job of that level waits behind the levels above it, in ms (1,000 to 30 days).
 */
export type PriorityBoundsLike = Partial<Record<PriorityLike, number>> | Map<PriorityLike, number>;

/** Where a job is in its lifecycle. */
export type JobState = "waiting" | "active" | "delayed" | "completed" | "failed" | "paused" | "cancelled";

/** The states, in the order of their wire numbers (1 = waiting … 7 = cancelled). */
export const JOB_STATES: readonly JobState[] = [
  "waiting",
  "active",
  "delayed",
  "completed",
  "failed",
  "paused",
  "cancelled",
];

/** Delay policy between attempts: a fixed delay, or `delay · 2^(attempt-1)`; durations in ms. */
export interface Backoff {
  /** "fixed" (the default: the same delay each time) or "exponential" (delay × 2^(attempt − 1)). */
  type?: "fixed" | "exponential";
  /** Base delay before the first retry, ms. */
  delay?: number;
  /** Random extra delay as a fraction of the computed one, 0 to 1. */
  jitter?: number;
  /** Upper bound of the computed delay, ms. */
  maxDelay?: number;
}

/** Which finished jobs to keep: `true` removes at once, a number keeps that many, or age (ms) and count. */
export type KeepJobs = boolean | number | { remove?: boolean; age?: number; count?: number };

/** Correlation id, tags and free attributes of a job. */
export interface JobMetadata {
  correlationId?: string;
  tags?: string[];
  attributes?: Record<string, string>;
}

/** Deduplication: while the key is held, adding a job with the same key returns the job that holds it. */
export interface Dedup {
  key: string;
  /** How long the key is held from the first add, ms; unset: until that job finishes. "extend" and "replace" restart it at each duplicate. */
  ttl?: number;
  /**
   * What an add does while the key is held: "keep_first" (the default) ignores it; "extend" ignores it and
   * restarts the ttl (needs a ttl); "replace" gives the holder, while it is waiting or delayed and has not
   * started, this add's name and data, restarts the ttl and re-delays a delayed one (debounce), and once the
   * holder started or finished adds a new job, which takes the key.
   */
  mode?: DedupMode;
}

/** `Dedup.mode`. */
export type DedupMode = "keep_first" | "extend" | "replace";

/** One job of a chain (`JobOptions.chainTo`). */
export interface ChainLink {
  queueName: string;
  jobName: string;
  data?: unknown;
  options?: Omit<JobOptions, "chainTo" | "dedup">;
}

/** Per-job settings; unset fields take the queue's defaults. Durations are milliseconds. */
export interface JobOptions {
  priority?: PriorityLike;
  /** Run no earlier than this many ms after the add (exclusive with `scheduleTime`). */
  delay?: number;
  /** Run no earlier than this time (exclusive with `delay`). */
  scheduleTime?: Date;
  /** Maximum runs including the first. */
  attempts?: number;
  /** Delay between attempts: a `Backoff`, or a number of ms (fixed). */
  backoff?: Backoff | number;
  /** Idempotency key: adding an id that exists returns the existing job. */
  jobId?: string;
  metadata?: JobMetadata;
  /** Retention once completed. */
  removeOnComplete?: KeepJobs;
  /** Retention once failed for good. */
  removeOnFail?: KeepJobs;
  /** Longest a single run may take, ms. */
  timeout?: number;
  /** Recoveries from a lost worker allowed before the job fails. */
  maxStalled?: number;
  /** Jobs to run one after another once this one completes. */
  chainTo?: ChainLink[];
  /** Deduplication key (a string: held until the job finishes), or key and ttl. */
  dedup?: Dedup | string;
  /**
   * Expiry, ms: a job not started within this long of being ready (its add, or its run time when delayed)
   * is not run; a claim that finds it late ends it cancelled, `cancelReason` starting "expired: ".
   */
  expireAfter?: number;
  /**
   * Fairness group (a tenant, a customer, a destination): the ready jobs of different groups take turns, one
   * job of each group in rotation, so one group's flood does not hold back the others. Priority comes first:
   * at each level the jobs without a group run, then that level's groups take turns; within a group jobs
   * run FIFO. A group may have limits (`QueueConfig.groupLimits`, `setGroupLimits`). 1 to 128 characters
   * (code points), no control characters; unset: no group. Not allowed in a queue's `defaultJobOptions`.
   */
  group?: string;
  /**
   * Labels a worker must have to run the job (hard routing): it goes only to a worker whose labels
   * (`WorkerOptions.labels`) hold every one of these pairs, and waits until such a worker connects to any
   * server. At most 16 pairs; a key 1 to 64 characters without `=` or `,`; a value up to 128 characters
   * without `,`. The job's group is then a routing group, `labels:` and its pairs in key order, which
   * `listGroups` shows. Not with `group`, nor in a queue's `defaultJobOptions`.
   */
  workerLabels?: Record<string, string>;
  /**
   * LIFO: the job goes to the head of its priority level (its group's, with a `group`) instead of the back,
   * so of a level's jobs the last added runs first. A delayed one goes to the head when due; a retry goes to
   * the back. Not allowed in a queue's `defaultJobOptions`.
   */
  lifo?: boolean;
  /**
   * How many failed runs the job keeps in `Job.errors` (the last ones): unset means the queue's default,
   * else 10; 0 keeps none beyond `failedReason` and `stacktrace`. At most 100.
   */
  errorHistory?: number;
}

/** A token-bucket rate limit: at most `max` job starts per `duration` ms. */
export interface RateLimit {
  max: number;
  /** The window, ms (more than 0 when `max` is). */
  duration: number;
  /**
   * The token bucket's capacity: how many jobs may start at once after the queue was idle, then `max` per
   * `duration`. 0 or unset: a tenth of `max` (at least 1). Up to 1,000,000, and only with a `max`.
   */
  burst?: number;
}

/** Limits of one fairness group (`JobOptions.group`), on top of the queue's own limits. */
export interface GroupLimits {
  /** Most jobs of the group active at once across all workers and servers; 0 or unset: no limit. */
  concurrency?: number;
  /** A rate limit on the group's job starts; unset: none. */
  rateLimit?: RateLimit;
  /**
   * Producer backpressure: the most jobs of the group waiting (ready to run; a delayed one counts once due).
   * An add beyond it is refused with `ResourceExhaustedError`. 0 or unset: no limit.
   */
  maxSize?: number;
}

/** Group limits as the server reports them: 0 and undefined for none. */
export interface GroupLimitsRead {
  concurrency: number;
  rateLimit: RateLimit | undefined;
  maxSize: number;
}

/** One fairness group of a queue (`listGroups`, `setGroupLimits`, `clearGroupLimits`). */
export interface GroupInfo {
  /** The group (`JobOptions.group`). */
  group: string;
  /** Its jobs ready to run. */
  waiting: number;
  /** Its jobs leased to workers. */
  active: number;
  /**
   * The limits that apply to it: its own, else the queue's `groupLimits`; `{ concurrency: 0, rateLimit:
   * undefined, maxSize: 0 }` when none applies.
   */
  limits: GroupLimitsRead;
  /** Whether `limits` are the group's own (`setGroupLimits`). */
  customLimits: boolean;
  /**
   * Whether the group is paused: by `pauseGroup` (its jobs are added but none starts until `resumeGroup`), or
   * by one of its maintenance windows (until `maintenanceUntil`), or both.
   */
  paused: boolean;
  /** When its timed pause lifts by itself; absent for a pause until `resumeGroup`, and when not paused. */
  pausedUntil?: Date;
  /** Its own maintenance windows (`setGroupLimits`); absent for none. */
  maintenanceWindows?: Required<MaintenanceWindow>[];
  /** While one of its windows holds it (`paused` is then true): when the window ends; absent outside. */
  maintenanceUntil?: Date;
  /** When its next window starts; absent without windows. */
  nextMaintenanceTime?: Date;
}

/** A queue's settings; unset fields take the server's defaults. */
export interface QueueConfig {
  /** At most `max` job starts per `duration` ms, shared by all workers. */
  rateLimit?: { max: number; duration: number };
  /** Options of jobs added without their own (no jobId, delay or scheduleTime). */
  defaultJobOptions?: JobOptions;
  /** Queue receiving jobs that fail for good; default "dead-letter-queue". */
  deadLetterQueue?: string;
  completedRetention?: KeepJobs;
  failedRetention?: KeepJobs;
  /** Keep failed jobs only in failed. */
  disableDeadLetter?: boolean;
  /** Most jobs of the queue active at once across all workers; 0: no cap. */
  concurrency?: number;
  /**
   * Anti-starvation aging: a job of a bounded level that has waited this long runs next, ahead of every
   * level (docs/jobs.md, "Priorities and their bounds"). Unset or empty: strict priority.
   */
  priorityBounds?: PriorityBoundsLike;
  /**
   * Limits of each fairness group of the queue on its own (`JobOptions.group`); a group's own limits
   * (`setGroupLimits`) replace them for that group. Unset: no per-group limit.
   */
  groupLimits?: GroupLimits;
  /**
   * Producer backpressure: the most jobs the queue holds waiting (or paused) and delayed. An add beyond it is
   * refused with `ResourceExhaustedError` and writes nothing; an `addBulk` is checked whole. Jobs the server
   * adds itself (chain links, workflow steps, schedules, retries) are never refused. 0 or unset: no limit.
   */
  maxSize?: number;
  /**
   * Recurring windows in which the queue starts no job (as if paused: running jobs finish), at most 16. A
   * window never lifts a pause given by hand, and `resumeQueue` inside one ends only that pause.
   */
  maintenanceWindows?: MaintenanceWindow[];
}

/** A recurring maintenance window (`QueueConfig.maintenanceWindows`). */
export interface MaintenanceWindow {
  /** When each window starts: a cron expression, 5 fields (or 6, seconds first), as schedules take it. */
  cron: string;
  /** How long each window lasts, in ms: 1 s to 31 days. */
  durationMs: number;
  /** The IANA time zone the cron expression is read in, such as "Europe/Paris"; "" or unset: UTC. */
  timezone?: string;
}

/** Names a job. */
export interface JobRef {
  queueName: string;
  jobId: string;
}

/** A job's predecessor in a chain or workflow, with its outcome. */
export interface ParentJob extends JobRef {
  stepKey: string;
  state: JobState | undefined;
  result: unknown;
  failedReason: string;
}

/**
 * A job that a running job added as its child (`ctx.waitForChildren`), with its outcome: what the job's next
 * run reads in `job.children`, and `getJob` in `Job.childJobs`.
 */
export interface ChildJob extends JobRef {
  /** Its state when it finished ("completed", "failed" or "cancelled"); undefined while it has not. */
  state: JobState | undefined;
  /** Its result, when it completed; undefined when `truncated`. */
  result: unknown;
  /** Its failure or cancel reason, when it failed for good or was cancelled. */
  failedReason: string;
  /** True when its result was over 1 KiB and left out: read it with `getJob` on the child. */
  truncated: boolean;
  /**
   * Its state now, in `getJob` (the server reads every child's in one batched read): "waiting", "active",
   * "delayed", "completed", "failed" or "cancelled"; undefined once it was removed, and in `job.children`.
   */
  currentState: JobState | undefined;
  /**
   * True when it was removed before it finished (removeJob, a clean or drain of its queue, a redrive of a
   * dead-letter copy): the parent no longer waits for it; `state` is undefined and `failedReason` says how.
   */
  removed: boolean;
}

/**
 * A child job for a running job to add (`ctx.waitForChildren`), as `addJob` takes one: its queue (any
 * registered queue), name, data and options. Without `jobId` or `dedup` in the options, the child's id is
 * derived from its parent's (a repeated call adds it once). With `jobId`, the child is that job of its queue:
 * added if none exists, else the existing one (one already finished counts at once). With `dedup`, it is the
 * job the key resolves to (this one, or the key's holder).
 */
export interface ChildSpec {
  queueName: string;
  name: string;
  /** The child's data; undefined stores JSON null. */
  data?: unknown;
  options?: JobOptions;
}

/** A job's wait for an external event (`ctx.waitForEvent`): an event of any one of its keys ends it. */
export interface EventWait {
  keys: string[];
  /** When the wait times out; undefined for a wait with no timeout. */
  until: Date | undefined;
}

/** An external event (`pushEvent`) as the job it woke sees it. */
export interface ExternalEvent {
  key: string;
  /** The event's data (JSON, or a `Uint8Array`); undefined when the push had none. */
  data: unknown;
  /** The id the push gave; "" when none. */
  eventId: string;
  /** When the server recorded the push. */
  pushedAt: Date | undefined;
}

/** One line a processor logged. */
export interface JobLogLine {
  time: Date | undefined;
  message: string;
}

/** How a failed run ended (`JobError.kind`). */
export type JobErrorKind = "error" | "timeout" | "stalled" | "cancelled" | "unknown";

/** One failed run of a job (`Job.errors`). */
export interface JobError {
  /** The run's attempt, 1 for the first; a lost run uses none, so it shares its number with the next. */
  attempt: number;
  kind: JobErrorKind;
  /** The processor's error message, or the server's for a timeout, a lost run or a cancel. */
  message: string;
  /** The stack trace the worker sent; "" when the server ended the run. */
  stacktrace: string;
  workerId: string;
  /** When the run ended. */
  time: Date | undefined;
}

/** A job as stored by the server. */
export interface Job {
  id: string;
  queueName: string;
  name: string;
  data: unknown;
  state: JobState | undefined;
  priority: JobPriority;
  attemptsMade: number;
  maxAttempts: number;
  stalledCount: number;
  result: unknown;
  failedReason: string;
  stacktrace: string;
  progress: unknown;
  createdAt: Date | undefined;
  processedAt: Date | undefined;
  finishedAt: Date | undefined;
  runAt: Date | undefined;
  metadata: Required<JobMetadata>;
  workerId: string;
  parents: ParentJob[];
  children: JobRef[];
  chainRoot: JobRef | undefined;
  chainFailure: string;
  workflow: { runId: string; stepKey: string } | undefined;
  logs: JobLogLine[];
  logCount: number;
  /** Its last failed runs, oldest first (the job's `errorHistory`, default 10); kept through a retry. */
  errors: JobError[];
  /** The children it added at run time (`ctx.waitForChildren`), in the order added, each with its outcome. */
  childJobs: ChildJob[];
  /**
   * How many of those have not finished yet: while above zero after a wait, the job waits in delayed with no
   * `runAt` and runs again once the last one finishes.
   */
  childrenPending: number;
  /** Its wait for an external event (`ctx.waitForEvent`), while parked and on the run after; undefined if none. */
  eventWait: EventWait | undefined;
  /** The external event that ended that wait; undefined while it waits and when it timed out. */
  event: ExternalEvent | undefined;
  cancelRequested: boolean;
  cancelReason: string;
  /** When the job expires if not started by then (options' expireAfter); undefined without expiry. */
  expiresAt: Date | undefined;
  /** The job's fairness group (`JobOptions.group`); "" when it has none. */
  group: string;
  /** The labels a worker must have to run the job (`JobOptions.workerLabels`); empty when none. */
  workerLabels: Record<string, string>;
  /** Whether the job was added to the head of its level (`JobOptions.lifo`). */
  lifo: boolean;
  /**
   * Set on the job `addJob` returns: true when the call created it, false when its `jobId` or dedup key was
   * taken and this is the job that held it (nothing was added). Absent on jobs read any other way.
   */
  created?: boolean;
  /**
   * Set on the job `addJob` returns: true when the add's dedup key (mode "replace") was held by a waiting or
   * delayed job whose name and data it replaced (`created` is false: the job is that job as it is now); else
   * false. Absent on jobs read any other way.
   */
  replaced?: boolean;
}

/**
 * When a pause lifts by itself (`pauseQueue`, `pauseGroup`): give at most one. The server refuses a time not
 * in the future by its clock, or more than 366 days ahead (InvalidArgumentError).
 */
export interface PauseOptions {
  /** Resume by itself this many ms from now (more than 0, at most 366 days). */
  resumeAfterMs?: number;
  /** Resume by itself at this time. */
  resumeAt?: Date;
}

/** A registered queue. */
export interface Queue {
  name: string;
  paused: boolean;
  /** When its timed pause lifts by itself; absent for a pause until `resumeQueue`, and when not paused. */
  pausedUntil?: Date;
  /** While a maintenance window holds it (`paused` is then true): when the window ends. */
  maintenanceUntil?: Date;
  /** When its next maintenance window starts; absent without windows. */
  nextMaintenanceTime?: Date;
  createdAt: Date | undefined;
  config: {
    rateLimit: { max: number; duration: number; burst: number } | undefined;
    deadLetterQueue: string;
    disableDeadLetter: boolean;
    concurrency: number;
    defaultAttempts: number;
    defaultPriority: JobPriority | undefined;
    completedRetention: { remove: boolean; age: number | undefined; count: number } | undefined;
    failedRetention: { remove: boolean; age: number | undefined; count: number } | undefined;
    /** The priority bounds, ms by level name, HIGH first; `{}` for strict priority. */
    priorityBounds: Partial<Record<BoundedPriority, number>>;
    /** The limits of each of its fairness groups; undefined when it limits none. */
    groupLimits: GroupLimitsRead | undefined;
    /** The most jobs it holds waiting and delayed (`QueueConfig.maxSize`); 0: no limit. */
    maxSize: number;
    /** Its maintenance windows (`timezone` "" for UTC); `[]` for none. */
    maintenanceWindows: Required<MaintenanceWindow>[];
  };
}

/** The ready jobs (waiting or paused) of one priority level of a queue. */
export interface LevelMetrics {
  priority: JobPriority;
  /** Jobs of this level ready to run, those a priority bound moved ahead among them. */
  waiting: number;
  /** How long the oldest of them has waited, ms; undefined when there is none. */
  oldestWaitingAge: number | undefined;
}

/** A queue's metrics (durations in ms, rates per second). */
export interface QueueMetrics {
  queueName: string;
  waiting: number;
  active: number;
  delayed: number;
  completed: number;
  failed: number;
  paused: number;
  stalled: number;
  stalledTotal: number;
  /** Failed runs (attempts, retried or not) ended by a timeout since the queue was registered: the server's or the worker's own. */
  timedOutTotal: number;
  /** Failed runs (attempts, retried or not) whose processor threw since the queue was registered. */
  raisedTotal: number;
  /** Estimated bytes of the store the queue's keys hold (its jobs sampled per state); refreshed every 30 s by default. */
  memoryBytes: number;
  cancelled: number;
  addedTotal: number;
  completedTotal: number;
  failedTotal: number;
  completedPerSecond: number;
  failedPerSecond: number;
  completedLastMinute: number;
  failedLastMinute: number;
  averageProcessingTime: number | undefined;
  p95ProcessingTime: number | undefined;
  errorRate: number;
  oldestWaitingAge: number | undefined;
  workers: number;
  freeCapacity: number;
  rateLimitTokens: number;
  isPaused: boolean;
  /** When its timed pause (`pauseQueue` with `resumeAfterMs` / `resumeAt`) lifts by itself; undefined for a pause until `resumeQueue`, and when not paused. */
  pausedUntil: Date | undefined;
  /** While a maintenance window holds the queue (`isPaused` is then true): when it ends; undefined outside the windows. */
  maintenanceUntil: Date | undefined;
  heldUntil: Date | undefined;
  history: { startTime: Date | undefined; added: number; completed: number; failed: number }[];
  sampleTime: Date | undefined;
  /** The ready jobs of each priority level, CRITICAL first (all five). */
  levels: LevelMetrics[];
  /** Fairness groups known to the queue: with jobs waiting or active, with limits of their own, or paused. */
  groups: number;
  /** Fairness groups paused (`pauseGroup`): their jobs are added, none starts until `resumeGroup`. */
  groupsPaused: number;
}

/** Whether a connected worker takes jobs (`WorkerInfo.state`; `quietWorker` and its kin). */
export type WorkerState = "active" | "quiet" | "stopping";

/** What a worker control call (`quietWorker`, `resumeWorker`, `stopWorker`, `setWorkerConcurrency`) did. */
export interface WorkerControlResult {
  /** The server holding the worker's stream, which told it. */
  serverId: string;
  /** The worker's state after the call. */
  state: WorkerState;
  /** The worker's concurrency after the call. */
  concurrency: number;
  /** False when the worker was already so (nothing was sent to it). */
  changed: boolean;
}

/** A connected worker, as `listWorkers` shows it. */
export interface WorkerInfo {
  workerId: string;
  serverId: string;
  host: string;
  language: string;
  version: string;
  queues: string[];
  concurrency: number;
  inFlight: number;
  connectTime: Date | undefined;
  lastHeartbeatTime: Date | undefined;
  /** How long its stream has been open, ms (by the server's clock: no skew with this machine's). */
  uptimeMs: number;
  cpuPercent: number;
  memoryBytes: number;
  labels: Record<string, string>;
  /** Whether it takes jobs: "active", "quiet" or "stopping" (`quietWorker`, `stopWorker`). */
  state: WorkerState;
  /** Its preference among the workers of its queues (`WorkerOptions.tier`; 0: the first). */
  tier: number;
}

/** One snapshot of `QueueManager.watchMetrics`. */
export interface MetricsSnapshot {
  /** When it was read (the server's Redis clock). */
  time: Date | undefined;
  /** The watched queues' metrics. */
  metrics: QueueMetrics[];
  /** The connected workers, when asked for (`includeWorkers`). */
  workers: WorkerInfo[];
}

/** A page of a list. */
export interface Page<T> {
  items: T[];
  /** Token of the next page; "" on the last page. */
  nextPageToken: string;
  /** Number of items in all pages when this one was read. */
  totalSize: number;
}

/** Which dead-letter copies `redriveDeadLetters` sends back; none set: every waiting copy. */
export interface RedriveOptions {
  /** Only copies of this queue's jobs. */
  originalQueue?: string;
  /** At most this many copies; not with `jobIds`. */
  limit?: number;
  /** Only these copies (`<original queue>:<job id>`), at most 1,000. */
  jobIds?: string[];
  /** A failed original runs with the copy's `original_data` rather than the data it failed with. */
  replaceData?: boolean;
  /**
   * With exactly one of `jobIds`: the data the original runs with instead (a failed one run again, a gone one
   * added anew), bytes as they are, anything else as JSON (`null` too). The server records it as it takes the
   * copy, in one step: a copy skipped or a call refused keeps its data.
   */
  data?: unknown;
}

/** The copies one redrive sent back to one original queue. */
export interface RedrivenQueue {
  /** retried + added + unchanged. */
  count: number;
  /** Originals that were failed and run again. */
  retried: number;
  /** Originals that were gone (retention, a removal) and were added anew. */
  added: number;
  /** Originals no longer failed, left as they are. */
  unchanged: number;
}

/** What a redrive did. */
export interface RedriveResult {
  /** Copies sent back in all. */
  count: number;
  /** Per original queue name. */
  queues: Record<string, RedrivenQueue>;
  /** Named copies that stay in the dead-letter queue, and why. */
  skipped: Record<string, string>;
  /** Original queues no longer registered; their copies stay. */
  missingQueues: string[];
}
