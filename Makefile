# batchctl — build, test, lint. `make test` is the test command CI runs.
GO      ?= go
BIN     := bin/batchctl
WITHPG  := $(GO) run ./internal/tools/withpg --

.PHONY: build test fuzz lint bench demo reliability clean

build: ## build bin/batchctl
	$(GO) build -o $(BIN) ./cmd/batchctl

test: ## the whole suite against a real Postgres (DATABASE_URL, or a throwaway cluster) and headless Chromium; fuzz seed corpora run as tests
	./scripts/ensure-postgres.sh
	./scripts/ensure-chromium.sh
	$(WITHPG) $(GO) test -race -count=1 -timeout 20m ./...

fuzz: ## every fuzz target for FUZZTIME (default 3s) each
	./scripts/fuzz.sh

demo: build ## the whole pipeline on local defaults: Postgres, emulator, submit, poll, status, results
	./scripts/ensure-postgres.sh
	$(WITHPG) ./scripts/demo.sh

bench: build ## performance figures, each against a limit measured in the same run
	./scripts/ensure-postgres.sh
	$(WITHPG) ./scripts/bench.sh

reliability: build ## the long reliability suite: kill -9, API faults, Postgres restarts, bad input corpus
	./scripts/ensure-postgres.sh
	BATCHCTL_RELIABILITY=full $(WITHPG) $(GO) test -count=1 -timeout 80m -v -run 'Test' ./reliability/

lint: ## go vet and gofmt
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

clean:
	rm -rf bin
