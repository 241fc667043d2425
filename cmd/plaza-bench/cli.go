package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// globalConfig holds the flags every scenario shares.
type globalConfig struct {
	URL         string
	UsersPrefix string
	Password    string
	Timeout     time.Duration
	MaxTime     time.Duration
	PID         int
	Register    bool
	JSON        bool
	Quiet       bool
}

func defaultGlobal() globalConfig {
	return globalConfig{
		URL:         "http://localhost:8008",
		UsersPrefix: "bench",
		Password:    "plaza-bench-password",
		Timeout:     60 * time.Second,
		MaxTime:     time.Hour,
		Register:    true,
	}
}

// bindGlobal defines the global flags on fs with g's current values as
// defaults, so a scenario's flag set can accept them too without undoing what
// was parsed before the scenario name.
func bindGlobal(fs *flag.FlagSet, g *globalConfig) {
	fs.StringVar(&g.URL, "url", g.URL, "homeserver base `URL`; the only host plaza-bench contacts")
	fs.StringVar(&g.UsersPrefix, "users-prefix", g.UsersPrefix, "`prefix` of bench user localparts (users are <prefix>-<scenario>-<n>)")
	fs.StringVar(&g.Password, "password", g.Password, "`password` for the bench users")
	fs.DurationVar(&g.Timeout, "timeout", g.Timeout, "per-request `duration` limit (a /sync long poll gets its poll time on top)")
	fs.DurationVar(&g.MaxTime, "max-time", g.MaxTime, "hard limit on the whole run, setup included")
	fs.IntVar(&g.PID, "pid", g.PID, "server process `id` to sample RSS from /proc/<pid>/status (idle before, peak, after)")
	fs.BoolVar(&g.Register, "register", g.Register, "create users via /register with m.login.dummy (falls back to login if they exist); --register=false only logs in")
	fs.BoolVar(&g.JSON, "json", g.JSON, "print results as JSON on stdout (the table then goes to stderr, unless --quiet)")
	fs.BoolVar(&g.Quiet, "quiet", g.Quiet, "no progress output on stderr")
}

var localpartRE = regexp.MustCompile(`^[a-z0-9._=/+-]+$`)

func (g *globalConfig) validate() (*url.URL, error) {
	u, err := url.Parse(g.URL)
	if err != nil {
		return nil, fmt.Errorf("--url %q: %w", g.URL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("--url %q: want an http:// or https:// URL such as http://localhost:8008", g.URL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("--url %q: no host", g.URL)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("--url %q: want only scheme, host, port and optionally a path prefix", g.URL)
	}
	if !localpartRE.MatchString(g.UsersPrefix) {
		return nil, fmt.Errorf("--users-prefix %q: use only a-z, 0-9 and ._=/+- (Matrix user ID localpart characters)", g.UsersPrefix)
	}
	if g.Password == "" {
		return nil, errors.New("--password must not be empty")
	}
	if g.Timeout <= 0 {
		return nil, fmt.Errorf("--timeout %v: must be positive", g.Timeout)
	}
	if g.MaxTime <= 0 {
		return nil, fmt.Errorf("--max-time %v: must be positive", g.MaxTime)
	}
	if g.PID < 0 {
		return nil, fmt.Errorf("--pid %d: not a process id", g.PID)
	}
	if g.PID > 0 {
		if _, err := readRSS(g.PID); err != nil {
			return nil, fmt.Errorf("--pid %d: %w", g.PID, err)
		}
	}
	return u, nil
}

// intList is a comma-separated list of positive integers, such as 1,8,32.
type intList []int

func (l *intList) String() string {
	parts := make([]string, len(*l))
	for i, n := range *l {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ",")
}

func (l *intList) Set(s string) error {
	var out intList
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		n, err := strconv.Atoi(part)
		if err != nil || n <= 0 {
			return fmt.Errorf("%q is not a positive integer (want a list such as 1,8,32)", part)
		}
		out = append(out, n)
	}
	*l = out
	return nil
}

// scenarioConfig is one scenario's flags and the code that runs it.
type scenarioConfig interface {
	bind(fs *flag.FlagSet)
	// validate checks the parsed flags; explicit names those given on the
	// command line.
	validate(explicit map[string]bool) error
	run(ctx context.Context, e *env) ([]*scenarioReport, error)
}

type scenarioSpec struct {
	name    string
	summary string
	help    string
	new     func() scenarioConfig
}

func scenarios() []scenarioSpec {
	return []scenarioSpec{
		{"send", "event send throughput and latency per (senders, rooms) combination", sendHelp, newSendConfig},
		{"deliver", "delivery latency from one sender to many /sync long-pollers, with loss check", deliverHelp, newDeliverConfig},
		{"initial-sync", "initial /sync time and size for a user in many rooms with long histories", initialSyncHelp, newInitialSyncConfig},
		{"all", "a default suite: send, deliver and initial-sync", allHelp, newAllConfig},
		{"seed", "build a huge room (Plaza admin endpoint): N members, M messages", seedHelp, newSeedConfig},
		{"peek", "guest views of a room, warm and cold: initialSync, room_summary, room page", peekHelp, newPeekConfig},
		{"viewers", "send→receive latency over N anonymous live viewers (SSE)", viewersHelp, newViewersConfig},
		{"idle-viewers", "server RSS holding N idle anonymous live viewers (SSE)", idleViewersHelp, newIdleViewersConfig},
		{"federation-latency", "send→/sync latency from a client of server A to clients of server B", federationHelp, newFederationConfig},
	}
}

func findScenario(name string) (scenarioSpec, bool) {
	for _, s := range scenarios() {
		if s.name == name {
			return s, true
		}
	}
	return scenarioSpec{}, false
}

func scenarioNames() string {
	var names []string
	for _, s := range scenarios() {
		names = append(names, s.name)
	}
	return strings.Join(names, ", ")
}

// invocation is a parsed command line.
type invocation struct {
	global   globalConfig
	baseURL  *url.URL
	scenario scenarioSpec
	config   scenarioConfig
}

// errHelpShown means help was asked for and printed: exit 0.
var errHelpShown = errors.New("help shown")

// usageError is a bad command line: exit 2 with a pointer to --help.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// parseArgs parses `[global flags] <scenario> [scenario flags]`. Help
// requests are written to w.
func parseArgs(args []string, w io.Writer) (*invocation, error) {
	inv := &invocation{global: defaultGlobal()}
	gfs := flag.NewFlagSet("plaza-bench", flag.ContinueOnError)
	gfs.SetOutput(io.Discard)
	bindGlobal(gfs, &inv.global)
	if err := gfs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			writeMainHelp(w)
			return nil, errHelpShown
		}
		return nil, usagef("%s", flagError(err))
	}
	rest := gfs.Args()
	if len(rest) == 0 {
		return nil, usagef("no scenario given; want one of: %s", scenarioNames())
	}
	if rest[0] == "help" {
		if len(rest) > 1 {
			spec, ok := findScenario(rest[1])
			if !ok {
				return nil, usagef("unknown scenario %q; want one of: %s", rest[1], scenarioNames())
			}
			writeScenarioHelp(w, spec)
		} else {
			writeMainHelp(w)
		}
		return nil, errHelpShown
	}
	spec, ok := findScenario(rest[0])
	if !ok {
		return nil, usagef("unknown scenario %q; want one of: %s", rest[0], scenarioNames())
	}
	inv.scenario = spec
	inv.config = spec.new()
	sfs := flag.NewFlagSet("plaza-bench "+spec.name, flag.ContinueOnError)
	sfs.SetOutput(io.Discard)
	inv.config.bind(sfs)
	bindGlobal(sfs, &inv.global)
	if err := sfs.Parse(rest[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			writeScenarioHelp(w, spec)
			return nil, errHelpShown
		}
		return nil, usagef("%s: %s", spec.name, flagError(err))
	}
	if sfs.NArg() > 0 {
		return nil, usagef("%s: unexpected argument %q (flags go before it)", spec.name, sfs.Arg(0))
	}
	explicit := map[string]bool{}
	sfs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	if err := inv.config.validate(explicit); err != nil {
		return nil, usagef("%s: %v", spec.name, err)
	}
	u, err := inv.global.validate()
	if err != nil {
		return nil, usagef("%v", err)
	}
	inv.baseURL = u
	return inv, nil
}

// flagError spells flag names in errors the way the help does, --name.
func flagError(err error) string {
	msg := err.Error()
	msg = strings.Replace(msg, "for flag -", "for flag --", 1)
	msg = strings.Replace(msg, "not defined: -", "not defined: --", 1)
	msg = strings.Replace(msg, "needs an argument: -", "needs an argument: --", 1)
	return msg
}

const mainHelpIntro = `plaza-bench: a load generator for any Matrix homeserver. It speaks the
plain Client-Server API over HTTP, so it runs the same against Plaza, Synapse,
Conduit or anything else, given its base URL.

Usage:
  plaza-bench [global flags] <scenario> [scenario flags]
  plaza-bench help <scenario>     (or: plaza-bench <scenario> --help)

Progress goes to stderr; results go to stdout as a table, or as JSON with
--json. Exit status: 0 ok, 1 the run failed (an error answer, a lost or
duplicated message), 2 a bad command line.

A non-2xx answer stops the run with the server's errcode and error, except
429 M_LIMIT_EXCEEDED, which is retried after retry_after_ms (or Retry-After;
at most %v per wait, %d times per request) and counted in the report.

Scenarios:
`

func writeMainHelp(w io.Writer) {
	fmt.Fprintf(w, mainHelpIntro, defaultMaxRetryWait, defaultMaxRetries)
	for _, s := range scenarios() {
		fmt.Fprintf(w, "  %-13s %s\n", s.name, s.summary)
	}
	fmt.Fprintf(w, "\nGlobal flags (also accepted after the scenario name):\n")
	g := defaultGlobal()
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	bindGlobal(fs, &g)
	writeFlags(w, fs)
	fmt.Fprintf(w, "\nExamples:\n"+
		"  plaza-bench send --senders 1,8 --rooms 1 --duration 5s\n"+
		"  plaza-bench --pid $(pgrep -n plaza) deliver --clients 100 --rate 50\n"+
		"  plaza-bench --url https://matrix.example.org --register=false initial-sync --reuse\n"+
		"  plaza-bench --json all --quick > results.json\n")
}

func writeScenarioHelp(w io.Writer, spec scenarioSpec) {
	fmt.Fprintf(w, "Usage: plaza-bench [global flags] %s [flags]\n\n%s\n", spec.name, strings.TrimSpace(spec.help))
	fmt.Fprintf(w, "\nFlags:\n")
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	spec.new().bind(fs)
	writeFlags(w, fs)
	fmt.Fprintf(w, "\nGlobal flags are listed by plaza-bench --help.\n")
}

// writeFlags lists flags GNU-style (--name), which the flag package accepts
// as readily as -name.
func writeFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		head := "  --" + f.Name
		if name != "" {
			head += " " + name
		}
		def := ""
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "0s" {
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "%s\n      %s%s\n", head, usage, def)
	})
}

// run is the whole program; main only supplies the process's context and
// streams and exits with the returned status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	inv, err := parseArgs(args, stdout)
	if errors.Is(err, errHelpShown) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "plaza-bench: %v\nRun 'plaza-bench --help' for usage.\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeoutCause(ctx, inv.global.MaxTime,
		fmt.Errorf("--max-time %v reached", inv.global.MaxTime))
	defer cancel()

	e := newEnv(inv.global, inv.baseURL, stderr)
	defer e.c.close()
	rep := newReport(inv, e)
	e.logf("plaza-bench %s against %s (%s)", inv.scenario.name, e.c.base, rep.Machine.String())
	info, err := e.c.probe(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "plaza-bench: %v\n", err)
		return 1
	}
	rep.Server = info
	e.logf("server: %s", info.String())

	reports, runErr := inv.config.run(ctx, e)
	rep.Scenarios = reports
	rep.Finished = time.Now()
	if runErr != nil {
		// Name our own --max-time when it is what stopped the run; a plain
		// interruption explains itself.
		if cause := context.Cause(ctx); cause != nil && cause != ctx.Err() && !strings.Contains(runErr.Error(), cause.Error()) {
			runErr = fmt.Errorf("%w (%v)", runErr, cause)
		}
		rep.Error = runErr.Error()
	}
	if err := rep.write(stdout, stderr, inv.global.JSON, inv.global.Quiet); err != nil {
		fmt.Fprintf(stderr, "plaza-bench: write results: %v\n", err)
		return 1
	}
	if runErr != nil {
		fmt.Fprintf(stderr, "plaza-bench: %v\n", runErr)
		return 1
	}
	if problems := rep.problems(); len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintf(stderr, "plaza-bench: FAIL: %s\n", p)
		}
		return 1
	}
	return 0
}
