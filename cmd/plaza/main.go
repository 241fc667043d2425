// Command plaza is Plaza's one binary: the homeserver (`plaza serve`) and the
// tools an operator runs beside it (`plaza migrate`, `plaza admin …`).
//
// Every command reads the same configuration (see config.go), so an admin
// command run with the server's environment acts on the server's database.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
)

const mainUsage = `Plaza is a Matrix homeserver for developer communities: a room for every
GitHub or GitLab project, readable by anyone, reachable from any Matrix client.

Usage:
  plaza <command> [flags]

Commands:
  serve                     run the homeserver
  migrate                   apply database migrations, then exit
  admin create-user         create an account
  admin registration-token  create a token that lets someone register
  version                   print the version

Every command reads --config FILE and PLAZA_* environment variables;
'plaza serve --help' lists them.

Examples:
  PLAZA_REGISTRATION=open plaza serve --demo
  plaza serve --config /etc/plaza/plaza.toml
  plaza admin create-user --username alice --password - < password.txt

Run 'plaza <command> --help' for more about a command.
`

// app carries what commands need from the process, so that tests can run
// them with their own environment and output.
type app struct {
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)
}

func main() {
	a := app{stdout: os.Stdout, stderr: os.Stderr, lookupEnv: os.LookupEnv}
	os.Exit(a.run(context.Background(), os.Args[1:]))
}

// Exit codes: 0 success, 1 the command failed, 2 bad usage or configuration.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	helpCommand = "help"
)

func (a app) run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(a.stderr, mainUsage)
		return exitUsage
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "-h", "-help", "--help", helpCommand:
		fmt.Fprint(a.stdout, mainUsage)
		return exitOK
	case "serve":
		return a.serve(ctx, rest)
	case "migrate":
		return a.migrate(ctx, rest)
	case "admin":
		return a.admin(ctx, rest)
	case "version", "-version", "--version":
		return a.version(rest)
	default:
		fmt.Fprintf(a.stderr, "plaza: unknown command %q\nRun 'plaza --help' for the list of commands.\n", cmd)
		return exitUsage
	}
}

// command is one subcommand's flag set and help text.
type command struct {
	name  string // "serve", "admin create-user"
	usage string // the text above the flag list
	flags *flag.FlagSet
}

func newCommand(name, usage string) *command {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// The flag package's own messages are replaced by parse's, which send
	// help to stdout and errors to stderr.
	fs.SetOutput(io.Discard)
	return &command{name: name, usage: usage, flags: fs}
}

// parse parses args. It returns ok=false with the exit code when the command
// should not run: help was asked for, or the arguments are wrong.
func (c *command) parse(a app, args []string) (code int, ok bool) {
	err := c.flags.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		c.printHelp(a.stdout)
		return exitOK, false
	}
	if err == nil && c.flags.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", c.flags.Arg(0))
	}
	if err != nil {
		fmt.Fprintf(a.stderr, "plaza %s: %v\nRun 'plaza %s --help' for usage.\n", c.name, err, c.name)
		return exitUsage, false
	}
	return exitOK, true
}

func (c *command) printHelp(w io.Writer) {
	fmt.Fprint(w, c.usage)
	if !hasFlags(c.flags) {
		return
	}
	fmt.Fprintln(w, "\nFlags:")
	c.flags.VisitAll(func(f *flag.Flag) {
		name, help := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			help += " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(w, "%-26s %s\n", line, help)
	})
}

func hasFlags(fs *flag.FlagSet) bool {
	found := false
	fs.VisitAll(func(*flag.Flag) { found = true })
	return found
}

// usageError reports a problem with the command line and returns exitUsage.
func (a app) usageError(c *command, format string, args ...any) int {
	fmt.Fprintf(a.stderr, "plaza %s: %s\nRun 'plaza %s --help' for usage.\n", c.name, fmt.Sprintf(format, args...), c.name)
	return exitUsage
}

// loadConfig loads the configuration, reporting a bad setting the way a
// usage error is reported: it is the operator's to fix before anything runs.
func (a app) loadConfig(c *command, path string) (Config, int, bool) {
	cfg, err := LoadConfig(path, a.lookupEnv)
	if err != nil {
		fmt.Fprintf(a.stderr, "plaza %s: configuration: %v\n", c.name, err)
		return Config{}, exitUsage, false
	}
	return cfg, exitOK, true
}

// newLogger builds the process logger: human-readable text on a terminal,
// JSON (for log collectors) otherwise, unless format says which.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: must be debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "auto":
		if isTerminal(w) {
			return slog.New(slog.NewTextHandler(w, opts)), nil
		}
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: must be auto, text or json", format)
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// logFlags adds --log-format and --log-level to a command; defaultLevel is
// info for commands whose progress matters and warn for one-shot tools,
// whose output is their result.
func logFlags(fs *flag.FlagSet, defaultLevel string) (format, level *string) {
	format = fs.String("log-format", "auto", "`FORMAT` of log lines: text, json, or auto (text on a terminal, JSON otherwise)")
	level = fs.String("log-level", defaultLevel, "log messages from this `LEVEL` up: debug, info, warn or error")
	return format, level
}

// configFlag adds --config to a command.
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", "", "read settings from this TOML `FILE`; PLAZA_* environment variables override it")
}
