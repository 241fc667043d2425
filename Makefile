# Plaza's build, run and test entry points. CI runs `make test` (.ci/run).
#
#   make run      build and start a demo server (private PostgreSQL under ./data)
#   make test     go vet + every test, against real PostgreSQL
#   make build    build bin/plaza
#   make fuzz     a short run of every Fuzz target (FUZZTIME=30s for longer)
#   make bench    every benchmark (BENCH=regexp, BENCHTIME=…, PKGS=… to narrow)
#   make clean    remove build output
#   make generate regenerate templ's *_templ.go from templates/*.templ
#   make docker   the container image (Dockerfile), tagged plaza:latest; needs Docker
#   make docker-base  a local Debian bookworm base image (debootstrap), for hosts that cannot pull one
#   make complement   run Complement (COMPLEMENT_DIR=checkout) against plaza:latest; needs Docker
#
# `run`, `test` and `bench` first make sure PostgreSQL's server binaries are
# installed (scripts/ensure-postgres.sh installs Debian's package if not):
# Plaza starts a private cluster with them; no system server is needed.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

GO           ?= go
PKGS         ?= ./...
TEST_TIMEOUT ?= 20m
FUZZTIME     ?= 10s
BENCH        ?= .
BENCHTIME    ?= 1s

.PHONY: all build run test fuzz bench clean postgres generate docker docker-base complement chromium

all: build

postgres:
	@scripts/ensure-postgres.sh

# The browser tests drive a headless Chromium (installed if missing).
chromium:
	@scripts/ensure-chromium.sh

build:
	$(GO) build -o bin/plaza ./cmd/plaza

run: postgres build
	PLAZA_REGISTRATION=open ./bin/plaza serve --demo

test: postgres chromium
	$(GO) vet $(PKGS)
	$(GO) test -timeout $(TEST_TIMEOUT) $(PKGS)
	@# ---- JavaScript suite: append its command(s) below, to run after the Go tests ----
	$(GO) build -o bin/plaza ./cmd/plaza
	cd test/js && npm ci --no-audit --no-fund && node --test --test-concurrency=1 --test-force-exit

# Fuzz targets are found by name in *_test.go files; `go test -fuzz` takes
# one package and one target at a time.
fuzz: postgres
	@found=0; \
	while IFS= read -r file; do \
		dir=$$(dirname "$$file"); \
		for target in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$$file"); do \
			found=$$((found + 1)); \
			echo "== fuzz $$dir $$target ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) "./$$dir" </dev/null; \
		done; \
	done < <(grep -rl --include='*_test.go' --exclude-dir=node_modules --exclude-dir=.git '^func Fuzz' . | sed 's|^\./||' | sort); \
	echo "fuzz: $$found targets run"

bench: postgres
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -timeout $(TEST_TIMEOUT) $(PKGS)

clean:
	rm -rf bin

# templ's generator, pinned to the module's version of github.com/a-h/templ.
TEMPL_VERSION := $(shell $(GO) list -m -f '{{.Version}}' github.com/a-h/templ)

generate:
	$(GO) run github.com/a-h/templ/cmd/templ@$(TEMPL_VERSION) generate -path templates

# The container image. The binary is built here without cgo and copied in,
# so the image build needs no Go toolchain. BASE is the Debian bookworm image
# to build from (make docker-base makes one where none can be pulled).
BASE           ?= debian:bookworm
IMAGE          ?= plaza:latest
docker:
	CGO_ENABLED=0 $(GO) build -o bin/plaza-docker ./cmd/plaza
	docker build --build-arg BASE=$(BASE) -t $(IMAGE) .

# A minimal Debian bookworm image made from Debian's packages with
# debootstrap (from its default mirror unless DEBIAN_MIRROR is set), tagged
# BASE_IMAGE; then: make docker BASE=$(BASE_IMAGE).
BASE_IMAGE     ?= plaza-local/debian:bookworm
DEBIAN_MIRROR  ?=
docker-base:
	@command -v debootstrap >/dev/null || { echo "docker-base: install debootstrap (apt-get install debootstrap)" >&2; exit 1; }
	rootfs=$$(mktemp -d) && trap 'rm -rf "$$rootfs"' EXIT && \
	debootstrap --variant=minbase bookworm "$$rootfs" $(DEBIAN_MIRROR) && \
	tar -C "$$rootfs" -c . | docker import - $(BASE_IMAGE)

# Complement, the Matrix homeserver suite, from a checkout in COMPLEMENT_DIR
# (with its Go dependencies resolvable there), against IMAGE. COMPLEMENT_RUN narrows
# the tests (go test -run), COMPLEMENT_PKG picks the packages (default ./tests/...).
COMPLEMENT_DIR ?=
COMPLEMENT_RUN ?= .
COMPLEMENT_PKG ?= ./tests/...
complement:
	@test -n "$(COMPLEMENT_DIR)" || { echo "complement: set COMPLEMENT_DIR to a Complement checkout" >&2; exit 1; }
	cd $(COMPLEMENT_DIR) && COMPLEMENT_BASE_IMAGE=$(IMAGE) $(GO) test -count=1 -timeout 60m -run '$(COMPLEMENT_RUN)' $(COMPLEMENT_PKG)
