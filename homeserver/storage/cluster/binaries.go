package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// debianRoot is where Debian and Ubuntu install each PostgreSQL major
// version's server binaries, side by side, none of them on $PATH.
const debianRoot = "/usr/lib/postgresql"

// errNoBinaries is what a machine without PostgreSQL gets: say what to do.
var errNoBinaries = errors.New("cluster: PostgreSQL server binaries (initdb, postgres) not found; " +
	"install them (Debian/Ubuntu: apt-get install postgresql; `make run` and `make test` do this for you) " +
	"or set PLAZA_PG_BIN to the directory that holds them")

// findBinDir picks the directory holding initdb and postgres. An explicit
// choice (explicit, then $PLAZA_PG_BIN) must be valid: silently falling back
// to another version would surprise whoever set it. wantMajor, the version of
// an existing cluster, is preferred among Debian's parallel installs so that
// installing a newer PostgreSQL does not strand the cluster.
func findBinDir(explicit, wantMajor string) (string, error) {
	for _, choice := range []struct{ what, dir string }{
		{"Options.BinDir", explicit},
		{"PLAZA_PG_BIN", os.Getenv("PLAZA_PG_BIN")},
	} {
		if choice.dir == "" {
			continue
		}
		if !hasServerBinaries(choice.dir) {
			return "", fmt.Errorf("cluster: %s=%s does not contain initdb and postgres", choice.what, choice.dir)
		}
		return choice.dir, nil
	}
	if wantMajor != "" {
		if dir := filepath.Join(debianRoot, wantMajor, "bin"); hasServerBinaries(dir) {
			return dir, nil
		}
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		// pg_config may come from a client-only package (libpq-dev), whose
		// bindir need not hold a server.
		if dir := strings.TrimSpace(string(out)); hasServerBinaries(dir) {
			return dir, nil
		}
	}
	if dir := newestDebianBinDir(); dir != "" {
		return dir, nil
	}
	if path, err := exec.LookPath("initdb"); err == nil {
		// Resolve symlinks such as /usr/local/bin/initdb -> the real bin
		// directory, where postgres sits beside it.
		if real, err := filepath.EvalSymlinks(path); err == nil && hasServerBinaries(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
		if hasServerBinaries(filepath.Dir(path)) {
			return filepath.Dir(path), nil
		}
	}
	return "", errNoBinaries
}

func newestDebianBinDir() string {
	entries, err := os.ReadDir(debianRoot)
	if err != nil {
		return ""
	}
	var versions []float64
	byVersion := map[float64]string{}
	for _, e := range entries {
		v, err := strconv.ParseFloat(e.Name(), 64) // "15", or "9.6" of old
		if err != nil {
			continue
		}
		if dir := filepath.Join(debianRoot, e.Name(), "bin"); hasServerBinaries(dir) {
			versions = append(versions, v)
			byVersion[v] = dir
		}
	}
	if len(versions) == 0 {
		return ""
	}
	return byVersion[slices.Max(versions)]
}

func hasServerBinaries(dir string) bool {
	for _, name := range []string{"initdb", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)(?:\.(\d+))?`)

// serverVersion returns the major version of binDir/postgres in the form
// PG_VERSION uses ("15"; "9.6" before version 10). `postgres --version` is
// allowed as root.
func serverVersion(binDir string) (string, error) {
	out, err := exec.Command(filepath.Join(binDir, "postgres"), "--version").Output()
	if err != nil {
		return "", fmt.Errorf("cluster: running %s --version: %w", filepath.Join(binDir, "postgres"), err)
	}
	return parseMajor(string(out))
}

func parseMajor(versionOutput string) (string, error) {
	m := versionRE.FindStringSubmatch(versionOutput)
	if m == nil {
		return "", fmt.Errorf("cluster: cannot parse PostgreSQL version from %q", strings.TrimSpace(versionOutput))
	}
	major, _ := strconv.Atoi(m[1])
	if major < 10 && m[2] != "" {
		return m[1] + "." + m[2], nil
	}
	return m[1], nil
}
