package main

import (
	"math"
	"slices"
	"time"
)

// percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest sample such that at least p% of all
// samples are less than or equal to it. Every reported value is therefore a
// latency that was actually observed, never an interpolation.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// latencySummary is the reported shape of a set of latency samples, in
// milliseconds so that the JSON output needs no unit convention.
type latencySummary struct {
	Count  int     `json:"count"`
	MinMS  float64 `json:"min_ms"`
	MeanMS float64 `json:"mean_ms"`
	P50MS  float64 `json:"p50_ms"`
	P90MS  float64 `json:"p90_ms"`
	P99MS  float64 `json:"p99_ms"`
	MaxMS  float64 `json:"max_ms"`
}

// summarize sorts a copy of samples and reports exact percentiles from it.
func summarize(samples []time.Duration) latencySummary {
	if len(samples) == 0 {
		return latencySummary{}
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	var sum time.Duration
	for _, d := range sorted {
		sum += d
	}
	return latencySummary{
		Count:  len(sorted),
		MinMS:  ms(sorted[0]),
		MeanMS: ms(sum / time.Duration(len(sorted))),
		P50MS:  ms(percentile(sorted, 50)),
		P90MS:  ms(percentile(sorted, 90)),
		P99MS:  ms(percentile(sorted, 99)),
		MaxMS:  ms(sorted[len(sorted)-1]),
	}
}

func ms(d time.Duration) float64 {
	return float64(d) / float64(time.Millisecond)
}

// medianInt is the nearest-rank median of a set of sizes.
func medianInt(values []int) int {
	if len(values) == 0 {
		return 0
	}
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	return sorted[(len(sorted)+1)/2-1]
}
