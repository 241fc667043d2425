package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"plaza/homeserver/id"
	pwhash "plaza/homeserver/password"
	"plaza/homeserver/storage"
)

const adminUsage = `Usage: plaza admin <command> [flags]

Commands:
  create-user         create an account
  registration-token  create a token that lets someone register

Admin commands act on the database of the configuration they are given, so
give them the server's config file and environment. They work while
'plaza serve' runs, on the embedded database too.

Run 'plaza admin <command> --help' for more about a command.
`

const createUserUsage = `Usage: plaza admin create-user --username NAME --password PASSWORD [--admin]

Creates an account on this server, whatever PLAZA_REGISTRATION says.
The user ID is @NAME:<server_name>. With --password -, the password is read
from the first line of standard input, which keeps it out of the process list
and shell history.

Examples:
  plaza admin create-user --username alice --password -
  echo "$PASSWORD" | plaza admin create-user --username ops --password - --admin
`

const registrationTokenUsage = `Usage: plaza admin registration-token [--uses N] [--expires DURATION] [--token TOKEN]

Creates a registration token and prints it on standard output. With
PLAZA_REGISTRATION=token, new users must give one when they register
(Element asks for it).

Examples:
  plaza admin registration-token                    # unlimited uses, never expires
  plaza admin registration-token --uses 1 --expires 24h
`

func (a app) admin(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(a.stderr, adminUsage)
		return exitUsage
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "-h", "-help", "--help", helpCommand:
		fmt.Fprint(a.stdout, adminUsage)
		return exitOK
	case "create-user":
		return a.createUser(ctx, rest)
	case "registration-token":
		return a.registrationToken(ctx, rest)
	default:
		fmt.Fprintf(a.stderr, "plaza admin: unknown command %q\nRun 'plaza admin --help' for the list of commands.\n", cmd)
		return exitUsage
	}
}

func (a app) createUser(ctx context.Context, args []string) int {
	c := newCommand("admin create-user", createUserUsage)
	configPath := configFlag(c.flags)
	username := c.flags.String("username", "", "the new user's `NAME` (the localpart: lowercase letters, digits, ._=-/+)")
	password := c.flags.String("password", "", "the new user's `PASSWORD`; - reads it from standard input")
	isAdmin := c.flags.Bool("admin", false, "make the user a server admin")
	logFormat, logLevel := logFlags(c.flags, "warn")
	if code, ok := c.parse(a, args); !ok {
		return code
	}
	if *username == "" {
		return a.usageError(c, "--username is required")
	}
	if *password == "" {
		return a.usageError(c, "--password is required (use --password - to read it from standard input)")
	}
	localpart := strings.TrimPrefix(*username, "@")
	if !id.ValidLocalpart(localpart) {
		return a.usageError(c, "--username %q: a user name may hold only lowercase letters, digits and . _ = - / +", *username)
	}
	pw := *password
	if pw == "-" {
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return a.usageError(c, "reading the password from standard input: %v", err)
		}
		pw = strings.TrimRight(line, "\r\n")
		if pw == "" {
			return a.usageError(c, "the password read from standard input is empty")
		}
	}
	if len(pw) > pwhash.MaxLength {
		return a.usageError(c, "--password: at most %d bytes", pwhash.MaxLength)
	}
	cfg, code, ok := a.loadConfig(c, *configPath)
	if !ok {
		return code
	}
	log, err := newLogger(a.stderr, *logFormat, *logLevel)
	if err != nil {
		return a.usageError(c, "%v", err)
	}

	userID := "@" + localpart + ":" + cfg.ServerName
	if len(userID) > id.MaxLength {
		return a.usageError(c, "user ID %s is longer than %d bytes", userID, id.MaxLength)
	}
	hash, err := pwhash.Hash(pw, 0)
	if err != nil {
		fmt.Fprintf(a.stderr, "plaza %s: hashing the password: %v\n", c.name, err)
		return exitFailed
	}
	err = a.withDatabase(ctx, cfg, log, func(db *storage.DB) error {
		err := db.CreateAccount(ctx, storage.Account{
			UserID: userID, Localpart: localpart, PasswordHash: hash, IsAdmin: *isAdmin, DisplayName: localpart,
		}, time.Now().UnixMilli())
		if errors.Is(err, storage.ErrExists) {
			return fmt.Errorf("user %s already exists", userID)
		}
		return err
	})
	if err != nil {
		fmt.Fprintf(a.stderr, "plaza %s: %v\n", c.name, err)
		return exitFailed
	}
	kind := "user"
	if *isAdmin {
		kind = "admin"
	}
	fmt.Fprintf(a.stdout, "created %s %s\n", kind, userID)
	return exitOK
}

func (a app) registrationToken(ctx context.Context, args []string) int {
	c := newCommand("admin registration-token", registrationTokenUsage)
	configPath := configFlag(c.flags)
	uses := c.flags.Int("uses", 0, "the token allows `N` registrations; 0: unlimited")
	expires := c.flags.Duration("expires", 0, "the token stops working after this `DURATION` (e.g. 24h, 30m); 0: never")
	token := c.flags.String("token", "", "use this `TOKEN` instead of a random one (up to 64 of A-Z a-z 0-9 . _ ~ -)")
	logFormat, logLevel := logFlags(c.flags, "warn")
	if code, ok := c.parse(a, args); !ok {
		return code
	}
	if *uses < 0 {
		return a.usageError(c, "--uses %d: must be 0 (unlimited) or more", *uses)
	}
	if *expires < 0 {
		return a.usageError(c, "--expires %s: must be positive, or 0 for never", *expires)
	}
	if *token == "" {
		*token = rand.Text()
	} else if !validRegistrationToken(*token) {
		return a.usageError(c, "--token %q: must be 1 to 64 of A-Z a-z 0-9 . _ ~ -", *token)
	}
	cfg, code, ok := a.loadConfig(c, *configPath)
	if !ok {
		return code
	}
	log, err := newLogger(a.stderr, *logFormat, *logLevel)
	if err != nil {
		return a.usageError(c, "%v", err)
	}

	var usesAllowed *int
	if *uses > 0 {
		usesAllowed = uses
	}
	var expiry *int64
	if *expires > 0 {
		ms := time.Now().Add(*expires).UnixMilli()
		expiry = &ms
	}
	err = a.withDatabase(ctx, cfg, log, func(db *storage.DB) error {
		err := db.CreateRegistrationToken(ctx, *token, usesAllowed, expiry)
		if errors.Is(err, storage.ErrExists) {
			return fmt.Errorf("registration token %q already exists", *token)
		}
		return err
	})
	if err != nil {
		fmt.Fprintf(a.stderr, "plaza %s: %v\n", c.name, err)
		return exitFailed
	}
	if cfg.Registration != "token" {
		log.Warn("registration is " + cfg.Registration + ", so the token has no use until PLAZA_REGISTRATION=token")
	}
	// Only the token goes to stdout, so that TOKEN=$(plaza admin registration-token) works.
	fmt.Fprintln(a.stdout, *token)
	return exitOK
}

// validRegistrationToken follows the spec's grammar for registration tokens.
func validRegistrationToken(t string) bool {
	if t == "" || len(t) > 64 {
		return false
	}
	for _, c := range []byte(t) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '~' || c == '-') {
			return false
		}
	}
	return true
}

// withDatabase runs f on the configured database, attaching to the embedded
// cluster of a running server if there is one.
func (a app) withDatabase(ctx context.Context, cfg Config, log *slog.Logger, f func(*storage.DB) error) error {
	db, err := openDatabase(ctx, cfg, attachCluster, log)
	if err != nil {
		return err
	}
	return errors.Join(f(db.DB), db.Close())
}
