package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// report is the whole run's result, printed as a table or as JSON.
type report struct {
	Tool      string            `json:"tool"`
	RunID     string            `json:"run_id"`
	URL       string            `json:"url"`
	Scenario  string            `json:"scenario"`
	Started   time.Time         `json:"started"`
	Finished  time.Time         `json:"finished"`
	Machine   machineInfo       `json:"machine"`
	Server    serverInfo        `json:"server"`
	Scenarios []*scenarioReport `json:"scenarios"`
	Error     string            `json:"error,omitempty"`
}

// machineInfo is the caveat every number carries: what it was measured on.
type machineInfo struct {
	NumCPU     int    `json:"nproc"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	GoVersion  string `json:"go_version"`
	OSArch     string `json:"os_arch"`
	// ServerLocal is true when --url names this machine, so the load
	// generator and the server compete for the same CPUs.
	ServerLocal bool `json:"server_local"`
}

func (m machineInfo) String() string {
	return fmt.Sprintf("nproc=%d GOMAXPROCS=%d %s %s", m.NumCPU, m.GOMAXPROCS, m.GoVersion, m.OSArch)
}

func (s serverInfo) String() string {
	var parts []string
	if s.Name != "" {
		parts = append(parts, strings.TrimSpace(s.Name+" "+s.Version))
	}
	if s.ServerHeader != "" {
		parts = append(parts, "Server: "+s.ServerHeader)
	}
	if len(s.Versions) > 0 {
		parts = append(parts, fmt.Sprintf("spec versions %s…%s", s.Versions[0], s.Versions[len(s.Versions)-1]))
	}
	if len(parts) == 0 {
		return "unidentified"
	}
	return strings.Join(parts, "; ")
}

func newReport(inv *invocation, e *env) *report {
	host := inv.baseURL.Hostname()
	local := host == "localhost"
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		local = true
	}
	return &report{
		Tool:     "plaza-bench",
		RunID:    e.runID,
		URL:      e.c.base,
		Scenario: inv.scenario.name,
		Started:  time.Now(),
		Machine: machineInfo{
			NumCPU:      runtime.NumCPU(),
			GOMAXPROCS:  runtime.GOMAXPROCS(0),
			GoVersion:   runtime.Version(),
			OSArch:      runtime.GOOS + "/" + runtime.GOARCH,
			ServerLocal: local,
		},
	}
}

// scenarioReport is one scenario's result. Exactly one of the result fields
// is set, matching Name.
type scenarioReport struct {
	Name           string         `json:"name"`
	Params         map[string]any `json:"params"`
	Started        time.Time      `json:"started"`
	ElapsedS       float64        `json:"elapsed_s"`
	Requests       int64          `json:"requests"`
	RateLimited    int64          `json:"rate_limited"`
	RateLimitWaitS float64        `json:"rate_limit_wait_s"`
	RSS            *rssReport     `json:"rss,omitempty"`
	Error          string         `json:"error,omitempty"`

	Send        []sendResult       `json:"send,omitempty"`
	Deliver     *deliverResult     `json:"deliver,omitempty"`
	InitialSync *initialSyncResult `json:"initial_sync,omitempty"`
	Seed        *seedResult        `json:"seed,omitempty"`
	Peek        *peekResult        `json:"peek,omitempty"`
	Viewers     *viewersResult     `json:"viewers,omitempty"`
}

// problems lists the results that make the run a failure even though every
// request succeeded.
func (r *report) problems() []string {
	var out []string
	for _, s := range r.Scenarios {
		if d := s.Deliver; d != nil && (d.Missed != 0 || d.Duplicated != 0) {
			out = append(out, fmt.Sprintf("deliver: %d deliveries missed and %d duplicated (want 0 and 0)", d.Missed, d.Duplicated))
		}
		if v := s.Viewers; v != nil && (v.Missed != 0 || v.Connected != v.Viewers) {
			out = append(out, fmt.Sprintf("%s: %d of %d viewers connected, %d deliveries missed (want all and 0)", s.Name, v.Connected, v.Viewers, v.Missed))
		}
	}
	return out
}

func (r *report) write(stdout, stderr io.Writer, asJSON, quiet bool) error {
	if !asJSON {
		return r.writeTable(stdout)
	}
	// Humans watching a --json run still see the table, unless --quiet.
	if !quiet {
		if err := r.writeTable(stderr); err != nil {
			return err
		}
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (r *report) writeTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "\nplaza-bench %s against %s — %s\n", r.Scenario, r.URL, r.Started.Format(time.RFC3339))
	fmt.Fprintf(&b, "server:  %s\n", r.Server.String())
	fmt.Fprintf(&b, "machine: %s", r.Machine.String())
	if r.Machine.ServerLocal {
		fmt.Fprintf(&b, "; the server is on this machine too, so it and plaza-bench share these CPUs")
	}
	fmt.Fprintf(&b, "\ncaveat:  numbers describe this machine and this load generator, not the server alone\n")
	for _, s := range r.Scenarios {
		fmt.Fprintf(&b, "\n## %s  (%s)\n", s.Name, formatParams(s.Params))
		fmt.Fprintf(&b, "elapsed %.1fs, %d requests, %d rate-limited (429) answers waited out for %.1fs\n",
			s.ElapsedS, s.Requests, s.RateLimited, s.RateLimitWaitS)
		if s.RSS != nil {
			fmt.Fprintf(&b, "server RSS (pid %d): idle before %s, peak %s, after %s\n",
				s.RSS.PID, kib(s.RSS.IdleBeforeKB), kib(s.RSS.PeakKB), kib(s.RSS.AfterKB))
		}
		switch {
		case s.Send != nil:
			writeSendTable(&b, s.Send)
		case s.Deliver != nil:
			writeDeliverTable(&b, s.Deliver)
		case s.InitialSync != nil:
			writeInitialSyncTable(&b, s.InitialSync)
		case s.Seed != nil:
			writeSeedTable(&b, s.Seed)
		case s.Peek != nil:
			writePeekTable(&b, s.Peek)
		case s.Viewers != nil:
			writeViewersTable(&b, s.Viewers)
		}
		if s.Error != "" {
			fmt.Fprintf(&b, "FAILED: %s\n", s.Error)
		}
	}
	if r.Error != "" && (len(r.Scenarios) == 0 || r.Scenarios[len(r.Scenarios)-1].Error != r.Error) {
		fmt.Fprintf(&b, "\nFAILED: %s\n", r.Error)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func kib(kb int64) string {
	return fmt.Sprintf("%.1f MiB", float64(kb)/1024)
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
}

func f1(v float64) string { return fmt.Sprintf("%.1f", v) }
func f2(v float64) string { return fmt.Sprintf("%.2f", v) }

func writeSendTable(w io.Writer, results []sendResult) {
	t := newTable(w)
	fmt.Fprintln(t, "senders\trooms\ttarget/s\tevents\tsecs\tevents/s\tp50 ms\tp90 ms\tp99 ms\tmax ms\t429s\t")
	for _, r := range results {
		target := "max"
		if r.TargetRate > 0 {
			target = f1(r.TargetRate)
		}
		fmt.Fprintf(t, "%d\t%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n", r.Senders, r.Rooms, target, r.Events,
			f2(r.ElapsedS), f1(r.EventsPerSec), f2(r.Latency.P50MS), f2(r.Latency.P90MS), f2(r.Latency.P99MS), f2(r.Latency.MaxMS), r.RateLimited)
	}
	t.Flush()
}

func writeDeliverTable(w io.Writer, d *deliverResult) {
	fmt.Fprintf(w, "%d clients, %d messages sent at %.1f/s (target %.1f/s), %d deliveries expected; %d backfilled gaps\n",
		d.Clients, d.Sent, d.SentPerSec, d.TargetRate, d.Expected, d.Gaps)
	t := newTable(w)
	fmt.Fprintln(t, "measure\tcount\tp50 ms\tp90 ms\tp99 ms\tmax ms\t")
	for _, row := range []struct {
		name string
		l    latencySummary
	}{{"delivery", d.Latency}, {"send", d.SendLatency}} {
		fmt.Fprintf(t, "%s\t%d\t%s\t%s\t%s\t%s\t\n", row.name, row.l.Count, f2(row.l.P50MS), f2(row.l.P90MS), f2(row.l.P99MS), f2(row.l.MaxMS))
	}
	t.Flush()
	verdict := "OK"
	if d.Missed != 0 || d.Duplicated != 0 {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "missed %d, duplicated %d, unexpected %d: %s\n", d.Missed, d.Duplicated, d.Unexpected, verdict)
}

func writeInitialSyncTable(w io.Writer, r *initialSyncResult) {
	if r.Seeded {
		fmt.Fprintf(w, "seeded %d rooms × %d messages in %.1fs (%.0f messages/s)\n", r.Rooms, r.Messages, r.SeedElapsedS, r.SeedPerSec)
	} else {
		fmt.Fprintf(w, "reused the %d rooms × %d messages seeded earlier\n", r.Rooms, r.Messages)
	}
	t := newTable(w)
	fmt.Fprintln(t, "filter\tcalls\tfirst ms\tmedian ms\tp90 ms\tmax ms\tmedian bytes\trooms seen\t")
	for _, v := range r.Variants {
		fmt.Fprintf(t, "%s\t%d\t%s\t%s\t%s\t%s\t%d\t%d\t\n", v.Name, v.Calls, f1(v.FirstMS), f1(v.MedianMS), f1(v.P90MS), f1(v.MaxMS), v.MedianBytes, v.RoomsSeen)
	}
	t.Flush()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
