# Vigil — the two commands of the quick start are `make demo` and `make test`.
GO ?= go
BIN ?= bin/vigil
# Build with the toolchain go.mod names (go1.26.11: standard-library
# security fixes govulncheck found in go1.26.8), downloaded through the Go
# module proxy when the machine's own Go is older.
export GOTOOLCHAIN ?= auto

.PHONY: build static demo test test-mochi test-short bench fuzz vet fmt tools clean sbom vuln

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/vigil

## static: the release binary: no cgo, no local paths, the version stamped (vigil version).
static:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/vigil

## demo: build and run Vigil on embedded defaults with a simulated ward and home cohort.
demo: build
	./$(BIN) demo

## tools: install the npm tooling the integration tests use (FHIR validator), pinned by its lockfile,
## and build a NATS server recent enough for `sync_interval: always` (the JetStream cluster test;
## Debian 12's 2.9 has no such setting) into bin/, from the Go module proxy.
NATS_SERVER_VERSION ?= v2.14.9
tools: bin/nats-server
	@for d in tools/*/; do [ -f "$$d/package-lock.json" ] || continue; echo "npm ci in $$d"; (cd "$$d" && npm ci --no-audit --no-fund --loglevel=error) || exit 1; done

bin/nats-server:
	GOBIN=$(abspath bin) GOFLAGS=-mod=mod $(GO) install github.com/nats-io/nats-server/v2@$(NATS_SERVER_VERSION)

## test: the whole suite, with the race detector. Needs `make tools` and Debian's chromium
## for the FHIR-validator and browser tests (.ci/run installs both).
test: tools
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 25m ./...
	# The patches to the MQTT broker library (third_party/mochi/VIGIL.md); `make test-mochi` runs upstream's suite too.
	cd third_party/mochi && $(GO) test -race -count=1 -run 'TestVigil' .
	# Tests with more goroutines than the race detector allows (8,128) run again without it.
	$(GO) test -count=1 -timeout 10m -run 'TestReconnectStorm' ./cmd/vigil/

## test-mochi: upstream mochi-mqtt's own tests on the patched copy (some are timing-dependent and
## fail now and then on a busy machine, patched or not: third_party/mochi/VIGIL.md).
test-mochi:
	cd third_party/mochi && $(GO) test -race -count=1 -skip 'TestServerAddListenersFromConfig' . ./packets ./listeners

test-short:
	$(GO) test -short -count=1 ./...

## bench: Go benchmarks (ingest path, time-series bytes per reading, one live update in chromium, device to FHIR subscription and EHR, FHIR search vs Medplum).
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./internal/tsdb/ ./internal/pebble/ ./internal/ingest/ ./internal/auth/
	$(GO) test -run '^$$' -bench BrowserLiveUpdate -benchtime 400x ./internal/web/
	$(GO) test -run '^$$' -bench DeviceToFHIR -benchtime 200x ./internal/node/
	$(GO) test -run '^$$' -bench SearchVsMedplum -benchtime 300x ./internal/fhir/

## fuzz: run every fuzz target for FUZZTIME (default 1m); not part of `make test`.
FUZZTIME ?= 1m
fuzz:
	@set -e; for t in $$(grep -rl --include='*_test.go' '^func Fuzz' internal); do \
		pkg=./$$(dirname $$t); \
		for f in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' $$t | sed 's/^func //'); do \
			echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin

## sbom: a CycloneDX SBOM of the Go module (sbom.cdx.json), made by cyclonedx-gomod at a pinned version.
sbom:
	$(GO) run github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod@v1.10.0 mod -json -licenses -output sbom.cdx.json .
	@echo "wrote sbom.cdx.json"

## vuln: govulncheck against a local copy of the Go vulnerability database (built from golang.org/x/vulndb through the module proxy; see tools/vulncheck/run.sh).
vuln:
	./tools/vulncheck/run.sh
