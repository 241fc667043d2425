package main

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"strings"
	"time"
)

const federationHelp = `
Measures how long a message takes from a client of one homeserver to a
syncing client of another, over federation.

--url is the sending server (A), --remote-url the receiving one (B); they
must federate with each other. One sender user on A creates a public room;
--clients users on B join it through A (POST /join/{roomId}?server_name=A)
and each runs a /sync long-poll loop, as in "deliver". The sender posts
m.room.message events at --rate for --duration, open-loop, each carrying its
send time on this process's monotonic clock; receive time minus send time
is the latency, which therefore covers A's send, A's federation sender, B's
/send handling and B's /sync.

Reports latency p50/p90/p99/max and missed/duplicated deliveries (both must
be 0). plaza-bench contacts only the two URLs given.
`

type federationConfig struct {
	deliverConfig
	remoteURL string
}

func newFederationConfig() scenarioConfig {
	return &federationConfig{deliverConfig: deliverConfig{clients: 1, rate: 200, duration: 10 * time.Second,
		drain: 30 * time.Second, timelineLimit: 50, sendWorkers: 16}}
}

func (c *federationConfig) bind(fs *flag.FlagSet) {
	c.deliverConfig.bind(fs)
	fs.StringVar(&c.remoteURL, "remote-url", c.remoteURL, "base `URL` of the receiving homeserver (B)")
}

func (c *federationConfig) validate(explicit map[string]bool) error {
	if c.remoteURL == "" {
		return fmt.Errorf("--remote-url is required: the receiving homeserver")
	}
	u, err := url.Parse(c.remoteURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--remote-url %q: want http(s)://host[:port]", c.remoteURL)
	}
	return c.deliverConfig.validate(explicit)
}

func (c *federationConfig) params() map[string]any {
	p := c.deliverConfig.params()
	p["remote_url"] = c.remoteURL
	return p
}

func (c *federationConfig) run(ctx context.Context, e *env) ([]*scenarioReport, error) {
	rep, err := e.scenario(ctx, "federation-latency", c.params(), func(ctx context.Context, rep *scenarioReport) error {
		res, err := c.federate(ctx, e)
		rep.Deliver = res
		return err
	})
	return []*scenarioReport{rep}, err
}

func (c *federationConfig) federate(ctx context.Context, e *env) (*deliverResult, error) {
	remote, _ := url.Parse(c.remoteURL) // checked by validate
	rc := newClient(remote, e.g.Timeout)
	defer rc.close()

	senders, err := e.accounts(ctx, []string{e.g.UsersPrefix + "-fed-sender"})
	if err != nil {
		return nil, err
	}
	sender := senders[0]
	receivers := make([]*session, c.clients)
	e.logf("federation-latency: %d users on %s", c.clients, c.remoteURL)
	err = parallel(ctx, c.clients, setupConcurrency, func(ctx context.Context, i int) error {
		s, err := rc.account(ctx, fmt.Sprintf("%s-fed-%d", e.g.UsersPrefix, i), e.g.Password, e.g.Register, e.runID)
		receivers[i] = s
		return err
	})
	if err != nil {
		return nil, err
	}
	rooms, err := e.createRooms(ctx, sender, 1, "federation")
	if err != nil {
		return nil, err
	}
	room := rooms[0]
	_, origin, ok := strings.Cut(sender.UserID, ":")
	if !ok {
		return nil, fmt.Errorf("sender %q has no server name", sender.UserID)
	}
	e.logf("federation-latency: %d clients joining %s through %s", c.clients, room, origin)
	err = parallel(ctx, c.clients, setupConcurrency, func(ctx context.Context, i int) error {
		r := receivers[i].req("POST", "/join/"+url.PathEscape(room), map[string]any{})
		r.query = url.Values{"server_name": {origin}}
		if err := receivers[i].c.doJSON(ctx, r, nil); err != nil {
			return fmt.Errorf("%s: join %s through %s: %w", receivers[i].UserID, room, origin, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return c.measure(ctx, e, sender, room, receivers)
}
