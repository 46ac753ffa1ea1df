# Gatehouse. `make run` serves on the embedded PostgreSQL; `make test` runs
# everything CI runs, starting PostgreSQL from the machine's binaries and
# installing, where it can, the optional programs some tests drive.

GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
E2E         := cmd/gatehouse/testdata/e2e
PGBOUNCER   := bin/pgbouncer
SKIP_LOG    := $(CURDIR)/bin/testdeps-skipped.log
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

# FUZZTIME, when set (a duration, or a count such as 50000x), is every
# fuzzing run's budget; unset, each target of fuzz runs a count of inputs
# (see fuzz) and each of fuzz-db 10 s.
FUZZTIME    ?=
# A hard bound on each fuzzing run, where coreutils' timeout exists (see fuzz).
FUZZ_BOUND  := $(shell command -v timeout >/dev/null 2>&1 && echo 'timeout -k 10 360')

.PHONY: build run test lint test-deps node-deps pgbouncer-dep chromium-dep fuzz fuzz-db bench test-many-tenants clean

build:
	$(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/gatehouse ./cmd/gatehouse

# make run listens on this machine only (localhost:$PORT, default 8080);
# the binary's own default, :$PORT, is for platforms. GATEHOUSE_ADDR overrides.
run: build
	GATEHOUSE_ADDR="$${GATEHOUSE_ADDR:-localhost:$${PORT:-8080}}" exec ./bin/gatehouse serve

# The tests (and a bounded fuzzing run, see fuzz), then one line per
# optional program that was missing, naming the tests that skipped for want
# of it (go test hides the skip messages of passing packages). With CI=true
# in the environment a missing program fails its tests and this target
# (internal/testdeps).
test: lint test-deps
	@mkdir -p bin && rm -f $(SKIP_LOG)
	@status=0; TESTDEPS_SKIP_LOG=$(SKIP_LOG) $(GO) test -race -count=1 ./... || status=$$?; \
	$(MAKE) --no-print-directory fuzz || status=1; \
	$(GO) run ./internal/testdeps/skipped $(SKIP_LOG) || status=1; exit $$status

# Go native fuzzing beyond the seed corpora (which every `go test` runs):
# a budget per target, each run bounded by -timeout. The budgets of fuzz
# are counts of inputs (about 10 s each here), not durations: with a
# duration, go1.26's fuzz coordinator fails the run with "context deadline
# exceeded" when the time runs out while a worker is mid-input, a race on a
# loaded machine with no input at fault (go.dev/issue/75804, fixed in Go
# 1.27; FuzzCheckText failed so in a CI run); a count has no deadline to
# race. make test fuzzes the
# targets that need no database: odd bytes in audit text (FuzzCleanText),
# the argument text rules (FuzzCheckText), the JSON-RPC edge (FuzzCheckBody).
# fuzz-db fuzzes the targets that drive the whole server and PostgreSQL
# (audit records, every tool's arguments and headers, any body). It is not
# part of make test: each fuzzing worker starts its own PostgreSQL, and on
# a loaded machine Go's fuzz coordinator (go1.26) was seen to hang for good
# when a worker died before its first ping (internal/fuzz worker.stop), so
# each run is also bounded from outside (FUZZ_BOUND).
fuzz:
	$(FUZZ_BOUND) $(GO) test -run '^$$' -fuzz '^FuzzCleanText$$' -fuzztime $(or $(FUZZTIME),40000x) -timeout 5m ./store/
	$(FUZZ_BOUND) $(GO) test -run '^$$' -fuzz '^FuzzCheckText$$' -fuzztime $(or $(FUZZTIME),20000x) -timeout 5m ./mcp/
	$(FUZZ_BOUND) $(GO) test -run '^$$' -fuzz '^FuzzCheckBody$$' -fuzztime $(or $(FUZZTIME),30000x) -timeout 5m ./mcp/

fuzz-db:
	$(FUZZ_BOUND) $(GO) test -run '^$$' -fuzz '^FuzzInsertAuditAnyBytes$$' -fuzztime $(or $(FUZZTIME),10s) -timeout 5m ./store/
	$(FUZZ_BOUND) $(GO) test -run '^$$' -fuzz '^FuzzToolArguments$$' -fuzztime $(or $(FUZZTIME),10s) -timeout 5m ./mcp/
	$(FUZZ_BOUND) $(GO) test -run '^$$' -fuzz '^FuzzJSONRPCBody$$' -fuzztime $(or $(FUZZTIME),10s) -timeout 5m ./mcp/

lint:
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) mod tidy -diff
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# Optional programs (internal/testdeps): present → used; absent and
# installable here → installed; otherwise their tests skip. An install that
# fails does not stop the run: its tests skip (or fail under CI=true).
test-deps: node-deps pgbouncer-dep chromium-dep

# The end-to-end tests' npm packages, exactly as locked (reinstalled when the
# lock file changes), where npm exists.
node-deps:
	@if command -v npm >/dev/null 2>&1; then \
		$(MAKE) -q $(E2E)/node_modules/.installed || $(MAKE) --no-print-directory $(E2E)/node_modules/.installed || echo "make test: npm ci failed (see above); the end-to-end tests will skip"; \
	fi

$(E2E)/node_modules/.installed: $(E2E)/package.json $(E2E)/package-lock.json
	npm ci --prefix $(E2E) --no-audit --no-fund --loglevel=error
	touch $@

# PgBouncer for the replica tests: one on PATH (Homebrew's, Debian's
# package) is used as it is; else, where apt-get and dpkg exist, Debian's
# package is unpacked under bin/ (no root, nothing installed system-wide)
# with a wrapper that sets its library path.
pgbouncer-dep:
	@if command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || [ -x $(PGBOUNCER)/pgbouncer ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory $(PGBOUNCER)/pgbouncer || echo "make test: could not unpack Debian's pgbouncer (see above); the PgBouncer tests will skip"; \
	fi

$(PGBOUNCER)/pgbouncer:
	rm -rf $(PGBOUNCER) && mkdir -p $(PGBOUNCER)
	cd $(PGBOUNCER) && { apt-get download pgbouncer libc-ares2 2>/dev/null || { apt-get update -qq && apt-get download pgbouncer libc-ares2; }; }
	cd $(PGBOUNCER) && for deb in *.deb; do dpkg -x $$deb root; done && rm -f *.deb
	printf '#!/bin/sh\nLD_LIBRARY_PATH="%s" exec "%s" "$$@"\n' "$$(echo $(CURDIR)/$(PGBOUNCER)/root/usr/lib/*-linux-gnu)" \
		"$(CURDIR)/$(PGBOUNCER)/root/usr/sbin/pgbouncer" >$@.tmp && chmod 755 $@.tmp
	$@.tmp --version && mv $@.tmp $@

# Chromium for the browser tests: one on PATH is used; else Debian's is
# installed where apt-get exists and make runs as root.
chromium-dep:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		command -v google-chrome >/dev/null 2>&1 || command -v google-chrome-stable >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "make test: installing Debian's chromium for the browser tests"; \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
		  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; } || \
		echo "make test: could not install chromium (see above); the browser tests will skip"; \
	fi

bench: build
	$(GO) run ./bench/load -bin bin/gatehouse

# The backup test at PostgreSQL's default settings and 3,000 tenants (make
# test runs it shrunk: 200 tenants on a smaller lock table). Minutes.
TENANTS ?= 3000
test-many-tenants:
	GATEHOUSE_TEST_BACKUP_TENANTS=$(TENANTS) $(GO) test -count=1 -timeout 60m -run TestBackupAtManyTenants -v ./cmd/gatehouse

clean:
	rm -rf bin $(E2E)/node_modules
