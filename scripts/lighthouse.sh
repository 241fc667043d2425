#!/usr/bin/env bash
# Runs Lighthouse (npm lighthouse, headless Debian chromium) on a room page
# of a freshly started demo server with 50 messages, and prints the
# performance, accessibility, best-practices and SEO scores and the page's
# transfer size. Not part of `make test` (it takes a minute).
#
#   scripts/lighthouse.sh              # builds bin/plaza, seeds, measures
#   LIGHTHOUSE_RUNS=3 scripts/lighthouse.sh
#
# Lighthouse is installed once under ~/.cache/plaza-lighthouse. Needs
# PostgreSQL's binaries (scripts/ensure-postgres.sh) and Chromium
# (scripts/ensure-chromium.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

LIGHTHOUSE_VERSION=13.5.0
RUNS=${LIGHTHOUSE_RUNS:-1}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/plaza-lighthouse
CHROME=${PLAZA_CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}
[ -n "$CHROME" ] || { echo "lighthouse: no Chromium; run scripts/ensure-chromium.sh" >&2; exit 1; }

if [ ! -x "$CACHE/node_modules/.bin/lighthouse" ]; then
	mkdir -p "$CACHE"
	npm install --no-audit --no-fund --prefix "$CACHE" "lighthouse@$LIGHTHOUSE_VERSION" >&2
fi

go build -o bin/plaza ./cmd/plaza
work=$(mktemp -d)
chmod o+x "$work" # the embedded PostgreSQL runs as postgres when we are root
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
PLAZA_DATA_DIR="$work/data" PLAZA_LISTEN="127.0.0.1:$port" PLAZA_PUBLIC_URL="$base" \
	PLAZA_SERVER_NAME=plaza.localhost PLAZA_REGISTRATION=open \
	./bin/plaza serve --demo >"$work/serve.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 600); do
	curl -fsS "$base/_matrix/client/versions" >/dev/null 2>&1 && break
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
curl -fsS "$base/_matrix/client/versions" >/dev/null 2>&1 || { echo "lighthouse: plaza did not start:" >&2; cat "$work/serve.log" >&2; exit 1; }

token=$(curl -fsS -X POST "$base/_matrix/client/v3/login" -H 'Content-Type: application/json' \
	-d '{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"plaza-demo"}' |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
alias='%23welcome:plaza.localhost'
room=$(curl -fsS "$base/_matrix/client/v3/directory/room/$alias" | python3 -c 'import json,sys; print(json.load(sys.stdin)["room_id"])')
for i in $(seq 1 50); do
	body="Message $i: a typical line of chat about the project, with a link https://example.org/issues/$i"
	if [ $((i % 10)) -eq 0 ]; then
		body=$(printf 'Code %d:\\n```go\\nfunc main() { fmt.Println(%d) }\\n```' "$i" "$i")
	fi
	curl -fsS -X PUT "$base/_matrix/client/v3/rooms/$room/send/m.room.message/lh$i" \
		-H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
		-d "{\"msgtype\":\"m.text\",\"body\":\"$body\"}" >/dev/null
done

url="$base/room/$alias"
echo "page: $url"
curl -fsS -o /dev/null -w 'HTML: %{size_download} bytes, server time %{time_starttransfer}s\n' "$url"
for run in $(seq 1 "$RUNS"); do
	CHROME_PATH="$CHROME" "$CACHE/node_modules/.bin/lighthouse" "$url" --quiet \
		--chrome-flags="--headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage" \
		--only-categories=performance,accessibility,best-practices,seo \
		--output=json --output-path="$work/report.json" >/dev/null 2>"$work/lighthouse.log" ||
		{ cat "$work/lighthouse.log" >&2; exit 1; }
	python3 - "$work/report.json" "$run" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
c = r["categories"]
a = r["audits"]
print("run %s: performance %d, accessibility %d, best-practices %d, seo %d; FCP %s, LCP %s, TBT %s, CLS %s; transfer %d bytes" % (
    sys.argv[2], round(c["performance"]["score"]*100), round(c["accessibility"]["score"]*100),
    round(c["best-practices"]["score"]*100), round(c["seo"]["score"]*100),
    a["first-contentful-paint"]["displayValue"], a["largest-contentful-paint"]["displayValue"],
    a["total-blocking-time"]["displayValue"], a["cumulative-layout-shift"]["displayValue"],
    a["total-byte-weight"]["numericValue"]))
for k, v in a.items():
    if v.get("score") is not None and v["score"] < 0.9 and v.get("scoreDisplayMode") in ("binary", "numeric", "metricSavings"):
        print("  below 0.9:", k, "-", v.get("title"))
PY
done
