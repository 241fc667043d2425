#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries (initdb and postgres) are installed,
# installing Debian's postgresql package if they are not. Plaza starts its own
# private cluster with them (homeserver/storage/cluster), for `plaza serve`
# without a database URL and for the tests; it needs no running system server.
#
# Looks where the Go code looks: $PLAZA_PG_BIN, `pg_config --bindir`,
# /usr/lib/postgresql/<version>/bin (Debian and Ubuntu keep them there, off
# $PATH), then $PATH. Called by `make run` and `make test`.
set -euo pipefail

has_server() { [ -x "$1/initdb" ] && [ -x "$1/postgres" ]; }

found() {
	if [ -n "${PLAZA_PG_BIN:-}" ]; then
		has_server "$PLAZA_PG_BIN" && return 0
		echo "ensure-postgres: PLAZA_PG_BIN=$PLAZA_PG_BIN does not contain initdb and postgres" >&2
		exit 1
	fi
	if command -v pg_config >/dev/null 2>&1 && has_server "$(pg_config --bindir)"; then
		return 0
	fi
	local dir
	for dir in /usr/lib/postgresql/*/bin; do
		has_server "$dir" && return 0
	done
	command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1
}

if found; then
	exit 0
fi

echo "ensure-postgres: PostgreSQL server binaries not found; installing Debian's postgresql package" >&2
if ! command -v apt-get >/dev/null 2>&1; then
	echo "ensure-postgres: no apt-get here: install a PostgreSQL server (13 or newer) with your package manager," >&2
	echo "ensure-postgres: then, if initdb is not on PATH, set PLAZA_PG_BIN to the directory holding initdb and postgres" >&2
	exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "ensure-postgres: not root and no sudo: run 'apt-get install -y postgresql' as root" >&2
		exit 1
	fi
	sudo=(sudo)
fi

"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql

if ! found; then
	echo "ensure-postgres: installed postgresql, but initdb and postgres are still not found" >&2
	exit 1
fi
echo "ensure-postgres: PostgreSQL server installed" >&2
