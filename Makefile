# meshguard — build, test and benchmark entry points.
GO ?= go
PKGS ?= ./...
# grpcnotrace keeps gRPC from linking golang.org/x/net/trace, whose html/template calls
# methods by name through reflection: with it in the binary the linker must keep every
# exported method of every type (all of Envoy's and Istio's generated getters and
# validators), ~7.7 MB of binary and ~3 MiB of every process's resident memory.
# internal/archtest TestShippedBinaryPrunesMethods guards it.
TAGS ?= grpcnotrace

.PHONY: all build test test-deps vet unit bench fuzz fmt

all: build

# A static binary (no libc mapped into every sidecar), as a container image ships it.
build:
	CGO_ENABLED=0 $(GO) build -tags $(TAGS) -o bin/meshguard ./cmd/meshguard

# test: what the README and CI run. Installs the system tools the tests use (idempotent,
# silent when present), then vets and tests everything.
test: test-deps vet unit

test-deps:
	@bash scripts/test-deps.sh

vet:
	$(GO) vet -tags $(TAGS) $(PKGS)

unit:
	$(GO) test -tags $(TAGS) -count=1 -timeout 30m $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

# bench: in-process Go benchmarks plus the scripts under bench/ (not run by CI).
bench:
	$(GO) test -tags $(TAGS) -run '^$$' -bench . -benchmem $(PKGS)
	@for s in bench/*.sh; do [ -e "$$s" ] || continue; echo "== $$s"; bash "$$s" || exit 1; done

# fuzz: a short run of every fuzz target (FUZZTIME=30s make fuzz for longer).
FUZZTIME ?= 10s
fuzz:
	@bash scripts/fuzz-all.sh $(FUZZTIME)
