// Package migration applies Plaza's schema migrations to a PostgreSQL
// database. It is a thin wrapper over tern's migrator
// (github.com/jackc/tern/v2/migrate) that adds progress messages and refuses
// to run an older Plaza against a database a newer one has migrated.
//
// Migrations are files at the root of an fs.FS named NNN_description.sql
// and run in number order. Numbers may leave gaps (several people add
// migrations at once); a new migration always takes a number above every
// existing one, because the database records how many have run. Each runs in
// its own transaction unless it contains the line "---- tern: disable-tx ----"
// (for CREATE INDEX CONCURRENTLY and the like). A file may carry a down
// migration after the line "---- create above / drop below ----"; Plaza never
// runs them. Files are text/template templates, so a literal "{{" in SQL must
// be written {{"{{"}}. The applied version is kept in VersionTable, and a
// PostgreSQL advisory lock serialises concurrent Apply calls, so several Plaza
// processes may start at once.
package migration

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/tern/v2/migrate"
)

// VersionTable is the table holding the number of the last applied
// migration.
const VersionTable = "public.schema_version"

// Apply brings the database conn is connected to up to date with
// migrations. logf, if not nil, receives a line per migration applied.
func Apply(ctx context.Context, conn *pgx.Conn, migrations fs.FS, logf func(format string, args ...any)) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	// The names table is read and written outside tern's own lock: take one
	// for the whole run so concurrent starts do not race on it.
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, namesLockKey); err != nil {
		return fmt.Errorf("migration: locking: %w", err)
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, namesLockKey) }()
	m, err := migrate.NewMigrator(ctx, conn, VersionTable)
	if err != nil {
		return fmt.Errorf("migration: preparing %s: %w", VersionTable, err)
	}
	seq, names, err := sequential(migrations)
	if err != nil {
		return fmt.Errorf("migration: loading: %w", err)
	}
	if err := checkApplied(ctx, conn, names); err != nil {
		return err
	}
	if err := m.LoadMigrations(seq); err != nil {
		if errors.As(err, &migrate.NoMigrationsFoundError{}) {
			// Most likely an fs.Sub that missed the directory.
			return errors.New("migration: no NNN_name.sql files at the root of the migrations FS")
		}
		return fmt.Errorf("migration: loading: %w", err)
	}
	current, err := m.GetCurrentVersion(ctx)
	if err != nil {
		return fmt.Errorf("migration: reading schema version: %w", err)
	}
	latest := int32(len(m.Migrations))
	switch {
	case current > latest:
		return fmt.Errorf("migration: the database schema is at version %d, newer than this binary's latest (%d); "+
			"run a Plaza at least as new as the one that migrated it", current, latest)
	case current == latest:
		logf("migration: schema up to date at version %d", current)
		return nil
	}
	logf("migration: schema at version %d, migrating to %d", current, latest)
	m.OnStart = func(_ int32, name, _, _ string) {
		logf("migration: applying %s", name)
	}
	start := time.Now()
	if err := m.Migrate(ctx); err != nil {
		var pgErr migrate.MigrationPgError
		if errors.As(err, &pgErr) && pgErr.PgError != nil && pgErr.Position > 0 {
			// Point at the offending line: "syntax error at or near" alone
			// is hard to find in a long migration.
			if where, lineErr := migrate.ExtractErrorLine(pgErr.Sql, int(pgErr.Position)); lineErr == nil {
				return fmt.Errorf("migration: %w (statement line %d: %s)", err, where.LineNum, where.Text)
			}
		}
		return fmt.Errorf("migration: %w", err)
	}
	if err := recordApplied(ctx, conn, names); err != nil {
		return err
	}
	logf("migration: schema at version %d (%s)", latest, time.Since(start).Round(time.Millisecond))
	return nil
}

// NamesTable records the file names of applied migrations, in order. tern
// keeps only a count, so a file added with a number below one already
// applied would silently shift which files the count covers; comparing
// names catches it.
const NamesTable = "public.schema_migrations"

// namesLockKey is the advisory lock that serialises Apply runs.
const namesLockKey int64 = 0x706c617a61 // "plaza"

func checkApplied(ctx context.Context, conn *pgx.Conn, names []string) error {
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+NamesTable+` (seq INT PRIMARY KEY, name TEXT NOT NULL)`); err != nil {
		return fmt.Errorf("migration: preparing %s: %w", NamesTable, err)
	}
	rows, err := conn.Query(ctx, `SELECT name FROM `+NamesTable+` ORDER BY seq`)
	if err != nil {
		return fmt.Errorf("migration: reading %s: %w", NamesTable, err)
	}
	applied, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("migration: reading %s: %w", NamesTable, err)
	}
	for i, name := range applied {
		if i >= len(names) {
			break // a newer binary migrated it; the version check says so
		}
		if names[i] != name {
			return fmt.Errorf("migration: %s is number %d here but the database applied %s there; "+
				"a new migration must take a number above every existing one", names[i], i+1, name)
		}
	}
	return nil
}

func recordApplied(ctx context.Context, conn *pgx.Conn, names []string) error {
	for i, name := range names {
		if _, err := conn.Exec(ctx, `INSERT INTO `+NamesTable+` (seq, name) VALUES ($1, $2) ON CONFLICT (seq) DO NOTHING`, i+1, name); err != nil {
			return fmt.Errorf("migration: recording %s: %w", name, err)
		}
	}
	return nil
}

// ApplyPool is Apply on a connection of its own, opened with pool's
// configuration: migrations may leave session state behind (search_path,
// prepared statements on tables they changed) that should not end up back
// in the pool.
func ApplyPool(ctx context.Context, pool *pgxpool.Pool, migrations fs.FS, logf func(format string, args ...any)) error {
	conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig)
	if err != nil {
		return fmt.Errorf("migration: connecting: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return Apply(ctx, conn, migrations, logf)
}

var migrationName = regexp.MustCompile(`^(\d+)_(.+\.sql)$`)

// sequential renumbers the migration files 1, 2, 3, … in number order, which
// is what tern wants, so that numbers in the source tree may have gaps. It
// also returns the original names in that order.
func sequential(fsys fs.FS) (fs.FS, []string, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, nil, err
	}
	type file struct {
		num  int
		name string
	}
	var files []file
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if e.IsDir() || m == nil {
			continue
		}
		n, err := strconv.Atoi(m[1])
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		files = append(files, file{n, e.Name()})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].num < files[j].num })
	out := fstest.MapFS{}
	names := make([]string, len(files))
	for i, f := range files {
		if i > 0 && files[i-1].num == f.num {
			return nil, nil, fmt.Errorf("two migrations are numbered %d: %s and %s", f.num, files[i-1].name, f.name)
		}
		data, err := fs.ReadFile(fsys, f.name)
		if err != nil {
			return nil, nil, err
		}
		out[fmt.Sprintf("%03d_%s", i+1, migrationName.FindStringSubmatch(f.name)[2])] = &fstest.MapFile{Data: data}
		names[i] = f.name
	}
	return out, names, nil
}
