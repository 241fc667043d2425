package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const viewersHelp = `
Measures live delivery to anonymous viewers of one room: --viewers
connections to Plaza's live stream (GET /_plaza/rooms/{room}/live, Server-Sent
Events whose data is JSON with "event_id"), while a member
(<users-prefix>-viewers-sender, registered and joined if needed) sends
--rate messages a second for --duration. Reports send→receive latency over
every (message, viewer) pair — from just before the send request to the
viewer reading the event's line — and deliveries missed; with --pid, the
server's RSS.

Connections: plaza-bench raises its open-file limit to the hard limit and,
with --source-addrs N, spreads connections over 127.0.0.1 … 127.0.0.N as
source addresses (each has its own ~28,000 ephemeral ports).
`

const idleViewersHelp = `
Holds --viewers idle anonymous live streams of one room (GET
/_plaza/rooms/{room}/live) open for --hold and reports how many connected
and, with --pid, the server's RSS before, at peak and after — what a crowd
of silent readers costs the server. See viewers for connections.
`

type viewersConfig struct {
	room        string
	viewers     int
	rate        float64
	duration    time.Duration
	hold        time.Duration
	sourceAddrs int
	connectConc int
	idle        bool
}

func newViewersConfig() scenarioConfig {
	return &viewersConfig{viewers: 1000, rate: 5, duration: 20 * time.Second, sourceAddrs: 1, connectConc: 64}
}

func newIdleViewersConfig() scenarioConfig {
	return &viewersConfig{viewers: 10_000, hold: 10 * time.Second, sourceAddrs: 1, connectConc: 64, idle: true}
}

func (c *viewersConfig) bind(fs *flag.FlagSet) {
	fs.StringVar(&c.room, "room", c.room, "room `ID or alias`: public and world-readable (a seed scenario's room)")
	fs.IntVar(&c.viewers, "viewers", c.viewers, "`number` of live stream connections")
	if c.idle {
		fs.DurationVar(&c.hold, "hold", c.hold, "how long to hold the connections once all are open")
	} else {
		fs.Float64Var(&c.rate, "rate", c.rate, "messages per second the member sends")
		fs.DurationVar(&c.duration, "duration", c.duration, "how long the member sends")
	}
	fs.IntVar(&c.sourceAddrs, "source-addrs", c.sourceAddrs, "spread connections over this many 127.0.0.x source `addresses`")
	fs.IntVar(&c.connectConc, "connect-concurrency", c.connectConc, "connections opened at once")
}

func (c *viewersConfig) validate(map[string]bool) error {
	switch {
	case c.room == "":
		return errors.New("--room is required")
	case c.viewers <= 0 || c.viewers > 200_000:
		return fmt.Errorf("--viewers %d: want 1 to 200000", c.viewers)
	case !c.idle && (c.rate <= 0 || c.rate > 10_000):
		return fmt.Errorf("--rate %v: want more than 0, at most 10000", c.rate)
	case !c.idle && c.duration <= 0:
		return fmt.Errorf("--duration %v: must be positive", c.duration)
	case c.idle && c.hold < 0:
		return fmt.Errorf("--hold %v: must not be negative", c.hold)
	case c.sourceAddrs <= 0 || c.sourceAddrs > 254:
		return fmt.Errorf("--source-addrs %d: want 1 to 254", c.sourceAddrs)
	case c.connectConc <= 0 || c.connectConc > 4096:
		return fmt.Errorf("--connect-concurrency %d: want 1 to 4096", c.connectConc)
	}
	return nil
}

func (c *viewersConfig) params() map[string]any {
	p := map[string]any{"room": c.room, "viewers": c.viewers, "source_addrs": c.sourceAddrs}
	if c.idle {
		p["hold"] = c.hold.String()
	} else {
		p["rate"], p["duration"] = c.rate, c.duration.String()
	}
	return p
}

type viewersResult struct {
	RoomID      string         `json:"room_id"`
	Viewers     int            `json:"viewers"`
	Connected   int            `json:"connected"`
	ConnectS    float64        `json:"connect_s"`
	Sent        int            `json:"sent,omitempty"`
	Expected    int            `json:"expected,omitempty"`
	Delivered   int            `json:"delivered,omitempty"`
	Missed      int            `json:"missed,omitempty"`
	Dropped     int            `json:"dropped"` // streams the server ended early
	Latency     latencySummary `json:"latency"`
	SendLatency latencySummary `json:"send_latency"`
	Idle        bool           `json:"idle"`
}

func (c *viewersConfig) run(ctx context.Context, e *env) ([]*scenarioReport, error) {
	name := "viewers"
	if c.idle {
		name = "idle-viewers"
	}
	roomID, err := resolveRoom(ctx, e, c.room)
	if err != nil {
		return nil, err
	}
	raiseFileLimit(e)
	rep, err := e.scenario(ctx, name, c.params(), func(ctx context.Context, rep *scenarioReport) error {
		res, err := c.viewersRun(ctx, e, roomID)
		rep.Viewers = res
		return err
	})
	return []*scenarioReport{rep}, err
}

// raiseFileLimit lifts the soft open-file limit to the hard one: every
// viewer is a socket.
func raiseFileLimit(e *env) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			e.logf("could not raise the open-file limit: %v", err)
			return
		}
	}
	e.logf("open-file limit %d", lim.Cur)
}

// receipt is one event a viewer read, and when.
type receipt struct {
	eventID string
	at      time.Time
}

type liveViewer struct {
	got  []receipt
	body io.ReadCloser
	done chan struct{}
	// ended is set when the stream ended before we closed it.
	ended atomic.Bool
	count atomic.Int64 // len(got), for progress while reading
}

func (c *viewersConfig) viewersRun(ctx context.Context, e *env, roomID string) (*viewersResult, error) {
	res := &viewersResult{RoomID: roomID, Viewers: c.viewers, Idle: c.idle}
	clients := make([]*http.Client, c.sourceAddrs)
	for i := range clients {
		dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
		if c.sourceAddrs > 1 {
			dialer.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(i+1))}
		}
		clients[i] = &http.Client{Transport: &http.Transport{Proxy: nil, DialContext: dialer.DialContext,
			MaxIdleConnsPerHost: -1, ResponseHeaderTimeout: 60 * time.Second}}
	}
	streamCtx, stopStreams := context.WithCancel(ctx)
	defer stopStreams()
	path := e.c.base + "/_plaza/rooms/" + url.PathEscape(roomID) + "/live"
	viewers := make([]*liveViewer, c.viewers)
	started := time.Now()
	var connected atomic.Int64
	stopProgress := e.every(2*time.Second, func() string {
		return fmt.Sprintf("connected %d/%d viewers", connected.Load(), c.viewers)
	})
	err := parallel(ctx, c.viewers, c.connectConc, func(ctx context.Context, i int) error {
		req, err := http.NewRequestWithContext(streamCtx, "GET", path, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", "text/event-stream")
		e.c.requests.Add(1)
		resp, err := clients[i%len(clients)].Do(req)
		if err != nil {
			return fmt.Errorf("viewer %d: GET live: %w", i, unwrapURLError(err))
		}
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			return fmt.Errorf("viewer %d: GET live: status %d: %s", i, resp.StatusCode, b)
		}
		v := &liveViewer{body: resp.Body, done: make(chan struct{})}
		viewers[i] = v
		connected.Add(1)
		go v.read(streamCtx)
		return nil
	})
	stopProgress()
	res.Connected = int(connected.Load())
	res.ConnectS = time.Since(started).Seconds()
	defer func() {
		stopStreams()
		for _, v := range viewers {
			if v != nil {
				v.body.Close()
				<-v.done
			}
		}
	}()
	if err != nil {
		return res, err
	}
	e.logf("%d viewers connected in %.1fs", res.Connected, res.ConnectS)

	if c.idle {
		if err := sleepCtx(ctx, c.hold); err != nil {
			return res, err
		}
		for _, v := range viewers {
			if v.ended.Load() {
				res.Dropped++
			}
		}
		return res, nil
	}

	users, err := e.accounts(ctx, []string{e.g.UsersPrefix + "-viewers-sender"})
	if err != nil {
		return res, err
	}
	sender := users[0]
	if err := sender.join(ctx, roomID); err != nil {
		return res, fmt.Errorf("the sender joining %s: %w", roomID, err)
	}
	// Let the join reach the viewers before timing starts.
	if err := sleepCtx(ctx, time.Second); err != nil {
		return res, err
	}
	before := countReceived(viewers)
	var mu sync.Mutex
	sentAt := map[string]time.Time{}
	var sendLat []time.Duration
	interval := time.Duration(float64(time.Second) / c.rate)
	n := int(c.duration.Seconds() * c.rate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var wg sync.WaitGroup
	var sendErr atomic.Pointer[error]
	for k := range n {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-tick.C:
		}
		wg.Go(func() {
			t0 := time.Now()
			id, err := sender.sendMessage(ctx, roomID, map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("viewers %s #%d", e.runID, k)})
			if err != nil {
				sendErr.CompareAndSwap(nil, &err)
				return
			}
			mu.Lock()
			sentAt[id] = t0
			sendLat = append(sendLat, time.Since(t0))
			mu.Unlock()
		})
	}
	wg.Wait()
	if p := sendErr.Load(); p != nil {
		return res, *p
	}
	// Stragglers: give the last messages time to arrive everywhere.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if countReceived(viewers)-before >= len(sentAt)*len(viewers) {
			break
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return res, err
		}
	}
	stopStreams()
	var lat []time.Duration
	for _, v := range viewers {
		v.body.Close()
		<-v.done
		if v.ended.Load() {
			res.Dropped++
		}
		for _, r := range v.got {
			if t0, ok := sentAt[r.eventID]; ok {
				lat = append(lat, r.at.Sub(t0))
			}
		}
	}
	res.Sent = len(sentAt)
	res.Expected = res.Sent * len(viewers)
	res.Delivered = len(lat)
	res.Missed = res.Expected - res.Delivered
	res.Latency = summarize(lat)
	res.SendLatency = summarize(sendLat)
	return res, nil
}

// countReceived is how many events the viewers have read so far (for
// knowing when to stop waiting; the results come from the receipts).
func countReceived(viewers []*liveViewer) int {
	n := 0
	for _, v := range viewers {
		n += int(v.count.Load())
	}
	return n
}

// read records every event ID the stream delivers, with the time its line
// was read. Lines can be long (rendered HTML): only the start of a line is
// kept, and event_id is the first member of Plaza's live JSON.
func (v *liveViewer) read(ctx context.Context) {
	defer close(v.done)
	br := bufio.NewReaderSize(v.body, 4096)
	prefix := []byte("data: ")
	key := []byte(`"event_id":"`)
	for {
		line, err := br.ReadSlice('\n')
		at := time.Now()
		head := line
		for errors.Is(err, bufio.ErrBufferFull) {
			if len(head) == len(line) {
				head = bytes.Clone(line)
			}
			_, err = br.ReadSlice('\n')
		}
		if err != nil {
			if ctx.Err() == nil {
				v.ended.Store(true)
			}
			return
		}
		if !bytes.HasPrefix(head, prefix) {
			continue
		}
		i := bytes.Index(head, key)
		if i < 0 {
			continue
		}
		rest := head[i+len(key):]
		j := bytes.IndexByte(rest, '"')
		if j < 0 {
			continue
		}
		v.got = append(v.got, receipt{eventID: string(rest[:j]), at: at})
		v.count.Add(1)
	}
}

func writeViewersTable(w io.Writer, r *viewersResult) {
	fmt.Fprintf(w, "room %s: %d/%d viewers connected in %.1fs; %d streams ended by the server\n", r.RoomID, r.Connected, r.Viewers, r.ConnectS, r.Dropped)
	if r.Idle {
		return
	}
	fmt.Fprintf(w, "%d messages sent, %d deliveries expected, %d delivered, %d missed\n", r.Sent, r.Expected, r.Delivered, r.Missed)
	t := newTable(w)
	fmt.Fprintln(t, "measure\tcount\tp50 ms\tp90 ms\tp99 ms\tmax ms\t")
	for _, row := range []struct {
		name string
		l    latencySummary
	}{{"send→viewer", r.Latency}, {"send", r.SendLatency}} {
		fmt.Fprintf(t, "%s\t%d\t%s\t%s\t%s\t%s\t\n", row.name, row.l.Count, f2(row.l.P50MS), f2(row.l.P90MS), f2(row.l.P99MS), f2(row.l.MaxMS))
	}
	t.Flush()
}
