package queuemanager

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// statsSampler measures this process's CPU use since its previous sample (percent of one core) and its
// resident memory, sent with heartbeats for ListWorkers and the dashboard. Where the system does not say
// (no getrusage, no /proc), it reports nothing.
type statsSampler struct {
	lastCPU  time.Duration
	lastWall time.Time
}

func (s *statsSampler) sample() (cpuPercent float64, memoryBytes uint64, ok bool) {
	cpu, ok := processCPU()
	if !ok {
		return 0, 0, false
	}
	now := time.Now()
	if !s.lastWall.IsZero() {
		if wall := now.Sub(s.lastWall); wall > 0 {
			cpuPercent = 100 * float64(cpu-s.lastCPU) / float64(wall)
		}
	}
	s.lastCPU, s.lastWall = cpu, now
	return max(cpuPercent, 0), residentMemory(), true
}

// residentMemory reads the resident set from /proc/self/statm (Linux); elsewhere the Go runtime's own
// view of the memory it holds from the system.
func residentMemory() uint64 {
	if data, err := os.ReadFile("/proc/self/statm"); err == nil {
		if fields := strings.Fields(string(data)); len(fields) > 1 {
			if pages, err := strconv.ParseUint(fields[1], 10, 64); err == nil {
				return pages * uint64(os.Getpagesize())
			}
		}
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.Sys
}
