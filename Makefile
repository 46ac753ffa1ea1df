# Gatehouse. `make run` serves on the embedded PostgreSQL; `make test` runs
# everything CI runs, installing what it needs (npm packages for the
# end-to-end test) and starting PostgreSQL from the machine's binaries.

GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
E2E         := cmd/gatehouse/testdata/e2e
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: build run test lint unit e2e-deps bench clean

build:
	$(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/gatehouse ./cmd/gatehouse

run: build
	./bin/gatehouse serve

test: lint e2e-deps
	$(GO) test -race -count=1 ./...

lint:
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# MCP Inspector (and later the TypeScript SDK) for the end-to-end tests,
# installed exactly as locked; reinstalled when the lock file changes.
e2e-deps: $(E2E)/node_modules/.installed

$(E2E)/node_modules/.installed: $(E2E)/package.json $(E2E)/package-lock.json
	npm ci --prefix $(E2E) --no-audit --no-fund --loglevel=error
	touch $@

bench: build
	$(GO) run ./bench/load -bin bin/gatehouse

clean:
	rm -rf bin $(E2E)/node_modules
