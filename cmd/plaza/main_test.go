package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestCLI runs the command line in-process for everything that stops before
// touching a database: help, usage errors and configuration errors.
func TestCLI(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		wantCode   int
		wantStdout []string
		wantStderr []string
	}{
		{name: "no command", args: nil, wantCode: exitUsage, wantStderr: []string{"Commands:", "serve"}},
		{name: "help", args: []string{"--help"}, wantCode: exitOK,
			wantStdout: []string{"Usage:", "serve", "migrate", "admin create-user", "admin registration-token", "version", "Examples:"}},
		{name: "help command", args: []string{"help"}, wantCode: exitOK, wantStdout: []string{"Commands:"}},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: exitUsage, wantStderr: []string{`unknown command "frobnicate"`, "plaza --help"}},

		{name: "serve help", args: []string{"serve", "--help"}, wantCode: exitOK,
			wantStdout: []string{"Usage: plaza serve", "Examples:", "PLAZA_SERVER_NAME", "PLAZA_REGISTRATION", "closed", "--demo", "--config FILE", "--log-format FORMAT"}},
		{name: "serve -h", args: []string{"serve", "-h"}, wantCode: exitOK, wantStdout: []string{"Usage: plaza serve"}},
		{name: "serve unknown flag", args: []string{"serve", "--bogus"}, wantCode: exitUsage,
			wantStderr: []string{"plaza serve: flag provided but not defined: -bogus", "plaza serve --help"}},
		{name: "serve stray argument", args: []string{"serve", "now"}, wantCode: exitUsage, wantStderr: []string{`unexpected argument "now"`}},
		{name: "serve bad log format", args: []string{"serve", "--log-format", "xml"}, wantCode: exitUsage, wantStderr: []string{`--log-format "xml"`}},
		{name: "serve bad setting", args: []string{"serve"}, env: map[string]string{"PLAZA_REGISTRATION": "maybe"}, wantCode: exitUsage,
			wantStderr: []string{`PLAZA_REGISTRATION="maybe": must be open, token or closed`}},
		{name: "serve missing config file", args: []string{"serve", "--config", "/nonexistent/plaza.toml"}, wantCode: exitUsage,
			wantStderr: []string{"/nonexistent/plaza.toml"}},

		{name: "migrate help", args: []string{"migrate", "--help"}, wantCode: exitOK, wantStdout: []string{"Usage: plaza migrate", "Examples:"}},
		{name: "migrate bad setting", args: []string{"migrate"}, env: map[string]string{"PLAZA_LISTEN": "8008"}, wantCode: exitUsage,
			wantStderr: []string{`PLAZA_LISTEN="8008"`}},

		{name: "admin without command", args: []string{"admin"}, wantCode: exitUsage, wantStderr: []string{"create-user", "registration-token"}},
		{name: "admin help", args: []string{"admin", "--help"}, wantCode: exitOK, wantStdout: []string{"create-user", "registration-token"}},
		{name: "admin unknown command", args: []string{"admin", "delete-everything"}, wantCode: exitUsage, wantStderr: []string{`unknown command "delete-everything"`}},
		{name: "create-user help", args: []string{"admin", "create-user", "--help"}, wantCode: exitOK,
			wantStdout: []string{"Usage: plaza admin create-user", "Examples:", "--username NAME", "--password PASSWORD", "--admin"}},
		{name: "create-user without username", args: []string{"admin", "create-user", "--password", "x"}, wantCode: exitUsage,
			wantStderr: []string{"--username is required"}},
		{name: "create-user without password", args: []string{"admin", "create-user", "--username", "x"}, wantCode: exitUsage,
			wantStderr: []string{"--password is required"}},
		{name: "create-user bad username", args: []string{"admin", "create-user", "--username", "Alice!", "--password", "x"}, wantCode: exitUsage,
			wantStderr: []string{`--username "Alice!"`}},
		{name: "create-user long password", args: []string{"admin", "create-user", "--username", "a", "--password", strings.Repeat("p", 513)}, wantCode: exitUsage,
			wantStderr: []string{"at most 512 bytes"}},
		{name: "create-user bad setting", args: []string{"admin", "create-user", "--username", "a", "--password", "x"},
			env: map[string]string{"PLAZA_SERVER_NAME": "bad name"}, wantCode: exitUsage, wantStderr: []string{`PLAZA_SERVER_NAME="bad name"`}},
		{name: "registration-token help", args: []string{"admin", "registration-token", "--help"}, wantCode: exitOK,
			wantStdout: []string{"Usage: plaza admin registration-token", "Examples:", "--uses", "--expires DURATION"}},
		{name: "registration-token negative uses", args: []string{"admin", "registration-token", "--uses", "-1"}, wantCode: exitUsage,
			wantStderr: []string{"--uses -1"}},
		{name: "registration-token bad duration", args: []string{"admin", "registration-token", "--expires", "tomorrow"}, wantCode: exitUsage,
			wantStderr: []string{"-expires"}},
		{name: "registration-token bad token", args: []string{"admin", "registration-token", "--token", "no spaces"}, wantCode: exitUsage,
			wantStderr: []string{`--token "no spaces"`}},

		{name: "version", args: []string{"version"}, wantCode: exitOK, wantStdout: []string{"plaza ", "go1."}},
		{name: "version help", args: []string{"version", "--help"}, wantCode: exitOK, wantStdout: []string{"Usage: plaza version"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			a := app{stdout: &stdout, stderr: &stderr, lookupEnv: fakeEnv(tt.env)}
			code := a.run(context.Background(), tt.args)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, &stdout, &stderr)
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, &stdout)
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, &stderr)
				}
			}
			if tt.wantCode == exitOK && stderr.Len() > 0 {
				t.Errorf("unexpected stderr:\n%s", &stderr)
			}
		})
	}
}

func TestValidRegistrationToken(t *testing.T) {
	for tok, want := range map[string]bool{
		"abc":                   true,
		"A-Z_a.z~09":            true,
		strings.Repeat("x", 64): true,
		strings.Repeat("x", 65): false,
		"":                      false,
		"with space":            false,
		"ünïcode":               false,
		"slash/es":              false,
	} {
		if got := validRegistrationToken(tok); got != want {
			t.Errorf("validRegistrationToken(%q) = %v, want %v", tok, got, want)
		}
	}
}
