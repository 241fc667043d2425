#!/usr/bin/env bash
# Makes sure a Chromium the browser tests can drive headless is installed,
# installing Debian's chromium package if it is not. The tests that run a
# real browser (cmd/plaza/chromium_signin_test.go, the web pages' tests)
# find it the same way: $PLAZA_CHROMIUM, then chromium, chromium-browser,
# google-chrome or google-chrome-stable on $PATH. Without one they fail
# (`go test -short` skips them). Called by `make test`.
set -euo pipefail

found() {
	if [ -n "${PLAZA_CHROMIUM:-}" ]; then
		[ -x "$PLAZA_CHROMIUM" ] && return 0
		echo "ensure-chromium: PLAZA_CHROMIUM=$PLAZA_CHROMIUM is not an executable" >&2
		exit 1
	fi
	local name
	for name in chromium chromium-browser google-chrome google-chrome-stable; do
		command -v "$name" >/dev/null 2>&1 && return 0
	done
	return 1
}

if found; then
	exit 0
fi

echo "ensure-chromium: no Chromium found; installing Debian's chromium package" >&2
if ! command -v apt-get >/dev/null 2>&1; then
	echo "ensure-chromium: no apt-get here: install Chromium or Chrome with your package manager," >&2
	echo "ensure-chromium: or set PLAZA_CHROMIUM to its executable" >&2
	exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "ensure-chromium: not root and no sudo: run 'apt-get install -y chromium' as root" >&2
		exit 1
	fi
	sudo=(sudo)
fi

"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium

if ! found; then
	echo "ensure-chromium: installed chromium, but it is still not found" >&2
	exit 1
fi
echo "ensure-chromium: Chromium installed" >&2
