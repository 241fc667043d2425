//go:build unix

package stateres

import (
	"syscall"
	"time"
)

// processCPUTime is the user and system CPU time the test process has used.
// Benchmarks report it beside wall time because the machine they run on is
// shared: wall time there measures the neighbours as much as the code.
func processCPUTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
