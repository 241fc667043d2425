//go:build !unix

package stateres

import "time"

// processCPUTime is unknown here; benchmarks then report 0 CPU time.
func processCPUTime() time.Duration { return 0 }
