# meshguard — build, test and benchmark entry points.
GO ?= go
PKGS ?= ./...

.PHONY: all build test test-deps vet unit bench fuzz fmt

all: build

# A static binary (no libc mapped into every sidecar), as a container image ships it.
build:
	CGO_ENABLED=0 $(GO) build -o bin/meshguard ./cmd/meshguard

# test: what the README and CI run. Installs the system tools the tests use (idempotent,
# silent when present), then vets and tests everything.
test: test-deps vet unit

test-deps:
	@bash scripts/test-deps.sh

vet:
	$(GO) vet $(PKGS)

unit:
	$(GO) test -count=1 -timeout 30m $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

# bench: in-process Go benchmarks plus the scripts under bench/ (not run by CI).
bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)
	@for s in bench/*.sh; do [ -e "$$s" ] || continue; echo "== $$s"; bash "$$s" || exit 1; done

# fuzz: a short run of every fuzz target (FUZZTIME=30s make fuzz for longer).
FUZZTIME ?= 10s
fuzz:
	@bash scripts/fuzz-all.sh $(FUZZTIME)
