//go:build !unix

package queuemanager

import "time"

// processCPU reports nothing where getrusage is missing: the worker then sends no stats.
func processCPU() (time.Duration, bool) { return 0, false }
