package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestIntList(t *testing.T) {
	tests := []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{"1", []int{1}, false},
		{"1,8,32", []int{1, 8, 32}, false},
		{" 2 , 4 ", []int{2, 4}, false},
		{"", nil, true},
		{"1,,2", nil, true},
		{"0", nil, true},
		{"-3", nil, true},
		{"1,x", nil, true},
	}
	for _, tt := range tests {
		var l intList
		err := l.Set(tt.in)
		if (err != nil) != tt.wantErr || (!tt.wantErr && !slices.Equal(l, tt.want)) {
			t.Errorf("Set(%q) = %v, %v; want %v (error %v)", tt.in, l, err, tt.want, tt.wantErr)
		}
	}
	l := intList{1, 8, 32}
	if l.String() != "1,8,32" {
		t.Errorf("String() = %q", l.String())
	}
}

func TestParseArgs(t *testing.T) {
	self := fmt.Sprint(os.Getpid())
	tests := []struct {
		name    string
		args    []string
		wantErr string // substring; empty for success
		check   func(t *testing.T, inv *invocation)
	}{
		{name: "no scenario", args: nil, wantErr: "no scenario given"},
		{name: "unknown scenario", args: []string{"sned"}, wantErr: `unknown scenario "sned"; want one of: send, deliver, initial-sync, all`},
		{name: "unknown flag", args: []string{"send", "--bogus"}, wantErr: "not defined: --bogus"},
		{name: "bad list", args: []string{"send", "--senders", "1,x"}, wantErr: `"x" is not a positive integer`},
		{name: "duration and events", args: []string{"send", "--duration", "1s", "--events", "5"}, wantErr: "either --duration or --events"},
		{name: "stray argument", args: []string{"send", "extra"}, wantErr: `unexpected argument "extra"`},
		{name: "bad url scheme", args: []string{"--url", "ftp://h", "send"}, wantErr: "want an http:// or https:// URL"},
		{name: "bad prefix", args: []string{"--users-prefix", "Bench!", "send"}, wantErr: "--users-prefix"},
		{name: "negative rate", args: []string{"send", "--rate", "-1"}, wantErr: "--rate"},
		{name: "deliver needs a rate", args: []string{"deliver", "--rate", "0"}, wantErr: "--rate 0"},
		{name: "missing pid", args: []string{"--pid", "999999999", "send"}, wantErr: "--pid 999999999"},
		{name: "too many rooms", args: []string{"initial-sync", "--rooms", "5000", "--messages", "5000"}, wantErr: "at most"},
		{
			name: "defaults",
			args: []string{"send"},
			check: func(t *testing.T, inv *invocation) {
				c := inv.config.(*sendConfig)
				if inv.global.URL != "http://localhost:8008" || !inv.global.Register || inv.global.UsersPrefix != "bench" {
					t.Errorf("global = %+v", inv.global)
				}
				if !slices.Equal(c.senders, intList{1, 8, 32}) || !slices.Equal(c.rooms, intList{1, 32}) || c.duration != 10*time.Second || c.rate != 0 || c.events != 0 {
					t.Errorf("send = %+v", c)
				}
			},
		},
		{
			name: "send flags",
			args: []string{"--url", "http://hs.test:8448/prefix", "send", "--senders", "2,4", "--rooms", "3", "--events", "100", "--rate", "50"},
			check: func(t *testing.T, inv *invocation) {
				c := inv.config.(*sendConfig)
				if !slices.Equal(c.senders, intList{2, 4}) || !slices.Equal(c.rooms, intList{3}) || c.events != 100 || c.rate != 50 {
					t.Errorf("send = %+v", c)
				}
				if inv.baseURL.Host != "hs.test:8448" || inv.baseURL.Path != "/prefix" {
					t.Errorf("base URL = %v", inv.baseURL)
				}
			},
		},
		{
			name: "global flags on both sides of the scenario",
			args: []string{"--users-prefix", "zz", "--json", "deliver", "--url", "http://other:1", "--clients", "7", "--timeout", "3s"},
			check: func(t *testing.T, inv *invocation) {
				g := inv.global
				if g.UsersPrefix != "zz" || !g.JSON || g.URL != "http://other:1" || g.Timeout != 3*time.Second {
					t.Errorf("global = %+v", g)
				}
				if c := inv.config.(*deliverConfig); c.clients != 7 || c.rate != 50 {
					t.Errorf("deliver = %+v", c)
				}
			},
		},
		{
			name: "login instead of register, reuse seed, own pid",
			args: []string{"--register=false", "--pid", self, "initial-sync", "--reuse", "--rooms", "3"},
			check: func(t *testing.T, inv *invocation) {
				c := inv.config.(*initialSyncConfig)
				if inv.global.Register || !c.reuse || c.rooms != 3 || c.messages != 2000 || inv.global.PID != os.Getpid() {
					t.Errorf("global %+v, initial-sync %+v", inv.global, c)
				}
			},
		},
		{
			name: "all --quick shortens durations",
			args: []string{"all", "--quick"},
			check: func(t *testing.T, inv *invocation) {
				c := inv.config.(*allConfig)
				if c.duration != 3*time.Second {
					t.Errorf("duration = %v, want 3s", c.duration)
				}
				suite := c.suite()
				if s := suite[0].(*sendConfig); s.duration != 3*time.Second || !slices.Equal(s.senders, intList{1, 8}) {
					t.Errorf("quick send = %+v", s)
				}
				if is := suite[2].(*initialSyncConfig); !is.reuse {
					t.Error("all: want initial-sync to reuse its seed")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var help bytes.Buffer
			inv, err := parseArgs(tt.args, &help)
			if tt.wantErr != "" {
				var ue *usageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want a usage error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, inv)
		})
	}
}

func TestHelp(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"Usage:", "Scenarios:", "initial-sync", "--url URL", "--users-prefix", "--pid", "--register", "--timeout", "--json"}},
		{[]string{"-h"}, []string{"Scenarios:"}},
		{[]string{"help"}, []string{"Scenarios:"}},
		{[]string{"send", "--help"}, []string{"plaza-bench [global flags] send", "--senders counts", "--rooms", "--duration", "--events N", "--rate"}},
		{[]string{"help", "deliver"}, []string{"--clients", "--rate", "missed and duplicated"}},
		{[]string{"initial-sync", "-h"}, []string{"--reuse", "--messages", "lazy"}},
		{[]string{"all", "--help"}, []string{"--quick"}},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		_, err := parseArgs(tt.args, &out)
		if !errors.Is(err, errHelpShown) {
			t.Errorf("%v: err = %v, want help", tt.args, err)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%v: help lacks %q:\n%s", tt.args, w, out.String())
			}
		}
	}
}

func TestRunExitCodes(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"--help"}, &stdout, &stderr); code != 0 || stdout.Len() == 0 {
		t.Errorf("--help: exit %d, stdout %d bytes", code, stdout.Len())
	}
	stderr.Reset()
	if code := run(t.Context(), []string{"nope"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "plaza-bench --help") {
		t.Errorf("bad scenario: exit %d, stderr %q", code, stderr.String())
	}
}
