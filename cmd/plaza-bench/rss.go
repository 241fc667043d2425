package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// rssReport is the server's resident set size around one scenario, in KiB
// as /proc reports it.
type rssReport struct {
	PID          int   `json:"pid"`
	IdleBeforeKB int64 `json:"idle_before_kb"`
	PeakKB       int64 `json:"peak_kb"`
	AfterKB      int64 `json:"after_kb"`
	Samples      int   `json:"samples"`
}

// readRSS reads VmRSS from /proc/<pid>/status.
func readRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read RSS of process %d: %w", pid, err)
	}
	return parseVmRSS(data)
}

// parseVmRSS finds the "VmRSS:   1234 kB" line of a /proc status file.
func parseVmRSS(status []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", sc.Text())
		}
		return strconv.ParseInt(fields[0], 10, 64)
	}
	return 0, fmt.Errorf("no VmRSS line (is it a kernel thread, or a zombie?)")
}

// rssSampler samples a process's RSS periodically to find its peak.
type rssSampler struct {
	pid    int
	report rssReport
	mu     sync.Mutex
	stop   chan struct{}
	done   chan struct{}
	err    error
}

// startRSS records the idle RSS and starts sampling every interval.
func startRSS(pid int, interval time.Duration) (*rssSampler, error) {
	idle, err := readRSS(pid)
	if err != nil {
		return nil, err
	}
	s := &rssSampler{
		pid:    pid,
		report: rssReport{PID: pid, IdleBeforeKB: idle, PeakKB: idle, Samples: 1},
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
	return s, nil
}

func (s *rssSampler) sample() int64 {
	kb, err := readRSS(s.pid)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.err == nil {
			s.err = err
		}
		return 0
	}
	s.report.Samples++
	s.report.PeakKB = max(s.report.PeakKB, kb)
	return kb
}

// finish stops sampling and records the RSS after the scenario. A process
// that vanished mid-run is reported as an error: the numbers would lie.
func (s *rssSampler) finish() (rssReport, error) {
	close(s.stop)
	<-s.done
	after := s.sample()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.report.AfterKB = after
	return s.report, s.err
}
