# Gatehouse. `make run` serves on the embedded PostgreSQL; `make test` runs
# everything CI runs, installing what it needs (npm packages and PgBouncer
# for the end-to-end tests) and starting PostgreSQL from the machine's
# binaries.

GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
E2E         := cmd/gatehouse/testdata/e2e
PGBOUNCER   := bin/pgbouncer
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: build run test lint unit e2e-deps bench clean

build:
	$(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/gatehouse ./cmd/gatehouse

# make run listens on this machine only (localhost:$PORT, default 8080);
# the binary's own default, :$PORT, is for platforms. GATEHOUSE_ADDR overrides.
run: build
	GATEHOUSE_ADDR="$${GATEHOUSE_ADDR:-localhost:$${PORT:-8080}}" exec ./bin/gatehouse serve

test: lint e2e-deps
	$(GO) test -race -count=1 ./...

lint:
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) mod tidy -diff
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# MCP Inspector and the TypeScript SDK for the end-to-end tests, installed
# exactly as locked (reinstalled when the lock file changes), and Debian's
# PgBouncer for the replica test, unpacked under bin/ (no root, nothing
# installed system-wide).
e2e-deps: $(E2E)/node_modules/.installed $(PGBOUNCER)/.installed

$(PGBOUNCER)/.installed:
	rm -rf $(PGBOUNCER) && mkdir -p $(PGBOUNCER)
	cd $(PGBOUNCER) && { apt-get download pgbouncer libc-ares2 2>/dev/null || { apt-get update -qq && apt-get download pgbouncer libc-ares2; }; }
	cd $(PGBOUNCER) && for deb in *.deb; do dpkg -x $$deb root; done && rm -f *.deb
	LD_LIBRARY_PATH="$$(echo $(PGBOUNCER)/root/usr/lib/*-linux-gnu)" $(PGBOUNCER)/root/usr/sbin/pgbouncer --version
	touch $@

$(E2E)/node_modules/.installed: $(E2E)/package.json $(E2E)/package-lock.json
	npm ci --prefix $(E2E) --no-audit --no-fund --loglevel=error
	touch $@

bench: build
	$(GO) run ./bench/load -bin bin/gatehouse

clean:
	rm -rf bin $(E2E)/node_modules
