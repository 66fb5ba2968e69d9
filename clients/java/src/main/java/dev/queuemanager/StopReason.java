package dev.queuemanager;

/** Why a run was told to stop ({@link JobContext#stopReason()}); its thread is interrupted. */
public enum StopReason {
  /** The job was cancelled (CancelJob) while it ran: however the handler returns, the job ends cancelled. */
  CANCELLED,
  /** The run passed the job's timeout (seen by the worker or first by the server): the attempt fails. */
  TIMEOUT,
  /** The server recovered the job (its lease ran out): the run's outcome is discarded. */
  LEASE_LOST,
  /** The worker shut down before the run finished: the job goes back to waiting. */
  ABANDONED
}
