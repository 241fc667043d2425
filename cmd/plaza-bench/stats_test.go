package main

import (
	"slices"
	"testing"
	"time"
)

func msList(vals ...int) []time.Duration {
	out := make([]time.Duration, len(vals))
	for i, v := range vals {
		out[i] = time.Duration(v) * time.Millisecond
	}
	return out
}

func TestPercentileNearestRank(t *testing.T) {
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"single p50", msList(7), 50, 7 * time.Millisecond},
		{"single p99", msList(7), 99, 7 * time.Millisecond},
		{"100 p50", msList(hundred...), 50, 50 * time.Millisecond},
		{"100 p90", msList(hundred...), 90, 90 * time.Millisecond},
		{"100 p99", msList(hundred...), 99, 99 * time.Millisecond},
		{"100 p100", msList(hundred...), 100, 100 * time.Millisecond},
		{"four p50 takes the 2nd", msList(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"four p51 takes the 3rd", msList(1, 2, 3, 4), 51, 3 * time.Millisecond},
		{"ten p99 is the max", msList(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"ten p90 is the 9th", msList(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
		{"p0 is the min", msList(3, 4, 5), 0, 3 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	// 1..1000 ms, shuffled deterministically.
	var samples []time.Duration
	for i := range 1000 {
		samples = append(samples, time.Duration((i*379)%1000+1)*time.Millisecond)
	}
	orig := slices.Clone(samples)
	got := summarize(samples)
	want := latencySummary{Count: 1000, MinMS: 1, MeanMS: 500.5, P50MS: 500, P90MS: 900, P99MS: 990, MaxMS: 1000}
	if got != want {
		t.Errorf("summarize = %+v, want %+v", got, want)
	}
	if !slices.Equal(samples, orig) {
		t.Error("summarize reordered its input")
	}
	if got := summarize(nil); got != (latencySummary{}) {
		t.Errorf("summarize(nil) = %+v, want zero", got)
	}
}

func TestMedianInt(t *testing.T) {
	tests := []struct {
		in   []int
		want int
	}{
		{nil, 0},
		{[]int{5}, 5},
		{[]int{9, 1, 5}, 5},
		{[]int{4, 1, 3, 2}, 2},
	}
	for _, tt := range tests {
		if got := medianInt(tt.in); got != tt.want {
			t.Errorf("medianInt(%v) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tplaza\nVmPeak:\t  900000 kB\nVmRSS:\t   123456 kB\nThreads:\t9\n"
	got, err := parseVmRSS([]byte(status))
	if err != nil || got != 123456 {
		t.Errorf("parseVmRSS = %d, %v; want 123456", got, err)
	}
	if _, err := parseVmRSS([]byte("Name:\tkthreadd\n")); err == nil {
		t.Error("parseVmRSS without a VmRSS line: want an error")
	}
}
