package main

import (
	"context"
	"flag"
	"fmt"
	"time"
)

const allHelp = `
Runs a default suite, one scenario after the other, and reports them together:

  send          --senders 1,8,32 --rooms 1,32 --duration D
  deliver       --clients 100 --rate 50 --duration D
  initial-sync  --rooms 50 --messages 2000 --reuse

with D = --duration. --quick shrinks the suite to a short smoke test (3s
runs; send 1,8 senders in 1 room; deliver 20 clients at 20/s; initial-sync
10 rooms × 200 messages). The suite stops at the first failing scenario and
still reports the ones before it.
`

type allConfig struct {
	duration time.Duration
	quick    bool
}

func newAllConfig() scenarioConfig {
	return &allConfig{duration: 10 * time.Second}
}

func (c *allConfig) bind(fs *flag.FlagSet) {
	fs.DurationVar(&c.duration, "duration", c.duration, "how long each send combination and the deliver run last")
	fs.BoolVar(&c.quick, "quick", c.quick, "a small, fast suite (durations of 3s unless --duration is given)")
}

func (c *allConfig) validate(explicit map[string]bool) error {
	if c.duration <= 0 {
		return fmt.Errorf("--duration %v: must be positive", c.duration)
	}
	if c.quick && !explicit["duration"] {
		c.duration = 3 * time.Second
	}
	return nil
}

// suite is the scenarios `all` runs, configured as their own flags would.
func (c *allConfig) suite() []scenarioConfig {
	send := newSendConfig().(*sendConfig)
	deliver := newDeliverConfig().(*deliverConfig)
	isync := newInitialSyncConfig().(*initialSyncConfig)
	send.duration, deliver.duration = c.duration, c.duration
	isync.reuse = true
	if c.quick {
		send.senders, send.rooms = intList{1, 8}, intList{1}
		deliver.clients, deliver.rate = 20, 20
		deliver.drain = 5 * time.Second
		isync.rooms, isync.messages, isync.iterations = 10, 200, 3
	}
	return []scenarioConfig{send, deliver, isync}
}

func (c *allConfig) run(ctx context.Context, e *env) ([]*scenarioReport, error) {
	var out []*scenarioReport
	for _, s := range c.suite() {
		reps, err := s.run(ctx, e)
		out = append(out, reps...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}
