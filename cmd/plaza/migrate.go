package main

import (
	"context"
	"fmt"
)

const migrateUsage = `Usage: plaza migrate [--config FILE]

Applies pending database migrations, then exits. 'plaza serve' applies them
too when it starts; run this to migrate ahead of a deploy, or to create the
schema in a new database. With no database URL it works on the embedded
cluster, starting it for the duration if no server is running.

Examples:
  plaza migrate
  PLAZA_DATABASE_URL=postgres://plaza@db.internal/plaza plaza migrate
`

func (a app) migrate(ctx context.Context, args []string) int {
	c := newCommand("migrate", migrateUsage)
	configPath := configFlag(c.flags)
	logFormat, logLevel := logFlags(c.flags, "info")
	if code, ok := c.parse(a, args); !ok {
		return code
	}
	log, err := newLogger(a.stderr, *logFormat, *logLevel)
	if err != nil {
		return a.usageError(c, "%v", err)
	}
	cfg, code, ok := a.loadConfig(c, *configPath)
	if !ok {
		return code
	}
	// storage.Open applies the migrations.
	db, err := openDatabase(ctx, cfg, attachCluster, log)
	if err == nil {
		err = db.Close()
	}
	if err != nil {
		fmt.Fprintf(a.stderr, "plaza %s: %v\n", c.name, err)
		return exitFailed
	}
	log.Info("the database schema is up to date")
	return exitOK
}
