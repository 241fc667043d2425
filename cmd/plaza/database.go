package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"plaza/homeserver/storage"
	"plaza/homeserver/storage/cluster"
)

// embeddedDBName is the database Plaza uses inside its private cluster; the
// cluster's own "postgres" database stays empty, as PostgreSQL intends.
const embeddedDBName = "plaza"

// database is an open, migrated storage.DB together with the embedded
// cluster it lives in, if Plaza started one.
type database struct {
	DB      *storage.DB
	cluster *cluster.Cluster // nil for an external database or an attached cluster
	log     *slog.Logger
}

// openMode says what to do when the embedded cluster is already running.
type openMode int

const (
	// ownCluster starts the embedded cluster and fails if another process
	// runs it: two servers must never write the same rooms.
	ownCluster openMode = iota
	// attachCluster connects to an embedded cluster a running `plaza serve`
	// owns, so that admin commands work without stopping the server, and
	// starts it otherwise.
	attachCluster
)

// openDatabase connects to the configured database, starting the embedded
// cluster when no URL is configured, and applies pending migrations.
func openDatabase(ctx context.Context, cfg Config, mode openMode, log *slog.Logger) (*database, error) {
	d := &database{log: log}
	connString := cfg.DatabaseURL
	if connString == "" {
		var err error
		connString, err = d.embedded(ctx, cfg.EmbeddedClusterDir(), mode)
		if err != nil {
			return nil, err
		}
	}
	db, err := storage.Open(ctx, connString, func(format string, args ...any) {
		log.Info(fmt.Sprintf(format, args...), "component", "migrations")
	})
	if err != nil {
		d.stopCluster()
		return nil, err
	}
	d.DB = db
	return d, nil
}

// embedded starts (or attaches to) the private cluster in dir and returns a
// connection string for Plaza's database in it, creating that database on
// first use.
func (d *database) embedded(ctx context.Context, dir string, mode openMode) (string, error) {
	if mode == attachCluster {
		if conn, ok := runningCluster(ctx, dir); ok {
			d.log.Info("using the PostgreSQL cluster of the running plaza server", "dir", dir)
			return conn, nil
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err == nil {
		d.log.Info("starting PostgreSQL in " + dir)
	} else {
		d.log.Info("initialising PostgreSQL cluster in " + dir + " (first start: this takes a few seconds)")
	}
	start := time.Now()
	// Not cancelled by a shutdown signal: start-up, initdb included, runs to
	// the end and the cluster is then stopped the normal way, rather than
	// killed half-made. That costs seconds at most.
	c, err := cluster.Start(context.WithoutCancel(ctx), cluster.Options{
		Dir: dir,
		Logf: func(format string, args ...any) {
			d.log.Info(fmt.Sprintf(format, args...), "component", "postgres")
		},
	})
	if err != nil {
		return "", err
	}
	d.cluster = c
	d.log.Info(fmt.Sprintf("PostgreSQL ready (version %s, socket in %s, %s)",
		c.Version(), c.SocketDir(), time.Since(start).Round(time.Millisecond)))
	if err := ensureDatabase(ctx, c.ConnString("postgres"), embeddedDBName); err != nil {
		d.stopCluster()
		return "", err
	}
	return c.ConnString(embeddedDBName), nil
}

// ensureDatabase creates database name unless it exists.
func ensureDatabase(ctx context.Context, adminConn, name string) error {
	conn, err := pgx.Connect(ctx, adminConn)
	if err != nil {
		return fmt.Errorf("connecting to the embedded PostgreSQL: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return fmt.Errorf("looking for database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database: created concurrently
		return nil
	}
	if err != nil {
		return fmt.Errorf("creating database %s: %w", name, err)
	}
	return nil
}

// runningCluster returns a connection string for the embedded cluster in
// dir if a server is running on it and accepts connections. postmaster.pid
// names the socket directory and port (lines 4 and 5, a format PostgreSQL has
// kept since 9.1); a stale file fails the connection attempt and reads as
// "not running", which cluster.Start then cleans up.
func runningCluster(ctx context.Context, dir string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		return "", false
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 5 {
		return "", false
	}
	port, err := strconv.Atoi(strings.TrimSpace(lines[3]))
	sockDir := strings.TrimSpace(lines[4])
	if err != nil || sockDir == "" {
		return "", false
	}
	conn := func(dbname string) string {
		u := url.URL{Scheme: "postgres", User: url.User(cluster.Superuser), Path: "/" + dbname,
			RawQuery: "host=" + url.QueryEscape(sockDir) + "&port=" + strconv.Itoa(port) + "&sslmode=disable"}
		return u.String()
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, conn(embeddedDBName))
	if err != nil {
		return "", false
	}
	_ = c.Close(ctx)
	return conn(embeddedDBName), true
}

// Close closes the pool, then stops the embedded cluster if Plaza started
// it. The pool gets a bounded wait: a request handler stuck on a query must
// not keep PostgreSQL from shutting down, and PostgreSQL's fast shutdown
// disconnects whatever is left.
func (d *database) Close() error {
	if d.DB != nil {
		closed := make(chan struct{})
		go func() {
			d.DB.Close()
			close(closed)
		}()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			d.log.Warn("database connections still busy after 5s; stopping PostgreSQL anyway")
		}
	}
	return d.stopCluster()
}

func (d *database) stopCluster() error {
	if d.cluster == nil {
		return nil
	}
	// Fast shutdown writes a checkpoint; on a big, busy cluster that can take
	// a while, and cutting it short only means crash recovery at next start.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := d.cluster.Stop(ctx)
	if err != nil {
		return fmt.Errorf("stopping PostgreSQL: %w", err)
	}
	return nil
}

// clusterDied is closed if the embedded cluster exits on its own; nil (never
// ready) for an external database.
func (d *database) clusterDied() <-chan struct{} {
	if d.cluster == nil {
		return nil
	}
	return d.cluster.Done()
}
