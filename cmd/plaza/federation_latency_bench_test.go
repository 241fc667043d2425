package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BenchmarkFederationLatency runs plaza-bench's federation-latency scenario
// against two `plaza serve` processes that federate over TLS on loopback: a
// client of A sends PLAZA_BENCH_RATE messages/s (default 200) for
// PLAZA_BENCH_DURATION (default 10s) to a room a client of B syncs, and the
// send→/sync latency percentiles are reported.
//
//	go test ./cmd/plaza -run '^$' -bench FederationLatency -benchtime 1x
func BenchmarkFederationLatency(b *testing.B) {
	rate, duration := os.Getenv("PLAZA_BENCH_RATE"), os.Getenv("PLAZA_BENCH_DURATION")
	if rate == "" {
		rate = "200"
	}
	if duration == "" {
		duration = "10s"
	}
	bench := filepath.Join(b.TempDir(), "plaza-bench")
	if out, err := exec.Command("go", "build", "-o", bench, "../plaza-bench").CombinedOutput(); err != nil {
		b.Fatalf("go build plaza-bench: %v\n%s", err, out)
	}
	servers := startFederation(b, 2)
	for i := 0; i < b.N; i++ {
		cmd := exec.Command(bench, "--url", servers[0].srv.url, "--quiet", "--json", "federation-latency",
			"--remote-url", servers[1].srv.url, "--rate", rate, "--duration", duration)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("plaza-bench: %v\n%s", err, out)
		}
		var res struct {
			Scenarios []struct {
				Deliver struct {
					Sent       int     `json:"sent"`
					SentPerSec float64 `json:"sent_per_s"`
					Delivered  int64   `json:"delivered"`
					Missed     int64   `json:"missed"`
					Duplicated int64   `json:"duplicated"`
					Latency    struct {
						P50MS float64 `json:"p50_ms"`
						P90MS float64 `json:"p90_ms"`
						P99MS float64 `json:"p99_ms"`
						MaxMS float64 `json:"max_ms"`
					} `json:"latency"`
				} `json:"deliver"`
			} `json:"scenarios"`
		}
		if err := json.Unmarshal(out, &res); err != nil || len(res.Scenarios) != 1 {
			b.Fatalf("plaza-bench output: %v\n%s", err, out)
		}
		d := res.Scenarios[0].Deliver
		b.Logf("sent %d (%.1f/s), delivered %d, missed %d, duplicated %d; latency p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms",
			d.Sent, d.SentPerSec, d.Delivered, d.Missed, d.Duplicated, d.Latency.P50MS, d.Latency.P90MS, d.Latency.P99MS, d.Latency.MaxMS)
		b.ReportMetric(d.Latency.P50MS, "p50-ms")
		b.ReportMetric(d.Latency.P99MS, "p99-ms")
		if d.Missed != 0 || d.Duplicated != 0 {
			b.Errorf("%d missed, %d duplicated", d.Missed, d.Duplicated)
		}
	}
}
