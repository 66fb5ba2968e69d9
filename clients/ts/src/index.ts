/** Queue Manager's TypeScript client: the producer and admin API (`QueueManager`) and the stream `Worker`. */
export { QueueManager, type BulkJob, type QueueManagerOptions } from "./client.js";
export { PulledJob, type FailOutcome, type FetchOptions, type PullFailOptions } from "./client-pull.js";
export { Worker, defaultConcurrency, type Processor, type WorkerLogger, type WorkerOptions } from "./worker.js";
export type { ActiveJob, JobContext } from "./context.js";
export type { WaitForChildrenOptions } from "./children.js";
export type { EventTrigger, EventTriggerSpec, PushedEvent, PushEventOptions, WaitForEventOptions } from "./external-events.js";
export { batch, type BatchHandler, type BatchItem, type BatchOptions } from "./batch.js";
export {
  AlreadyExistsError,
  DeadlineExceededError,
  DelayedError,
  FailedPreconditionError,
  InvalidArgumentError,
  JobAbortedError,
  NotFoundError,
  PermissionDeniedError,
  QueueManagerError,
  RateLimitedError,
  ResourceExhaustedError,
  UnauthenticatedError,
  UnavailableError,
  UnrecoverableError,
  WaitingForChildrenError,
  WaitingForEventError,
  codeName,
  errorFromRpc,
  errorFromStatus,
} from "./errors.js";
export {
  DEAD_LETTER_QUEUE,
  deadLetterFromJob,
  type DeadLetter,
  type ListDeadLettersOptions,
} from "./dead-letters.js";
export {
  JOB_EVENT_TYPES,
  JobEventStream,
  type JobEvent,
  type JobEventType,
  type JobEventTypeLike,
  type WatchJobEventsOptions,
} from "./events.js";
export {
  MAX_BULK_LIMIT,
  type BulkOptions,
  type BulkResult,
  type CancelJobsOptions,
  type CountJobsOptions,
  type JobCount,
  type JobFilter,
  type ListJobsOptions,
} from "./filters.js";
export {
  AesGcmCodec,
  CodecChain,
  GzipCodec,
  PayloadCodecError,
  codecsFromEnv,
  type PayloadCodec,
} from "./codecs.js";
export { EncodedPayload } from "./payload-format.js";
export { checkAddress, type ConnectionOptions, type TlsOptions } from "./transport.js";
export * from "./types.js";
export { when, whenError } from "./workflows.js";
export type {
  ConditionOp,
  Schedule,
  ScheduleSpec,
  StepCondition,
  Workflow,
  WorkflowRun,
  WorkflowState,
  WorkflowStep,
  WorkflowStepRun,
  WorkflowStepState,
} from "./workflows.js";
