# batchctl — build, test, lint. `make test` is the test command CI runs.
GO      ?= go
BIN     := bin/batchctl
WITHPG  := $(GO) run ./internal/tools/withpg --

.PHONY: build test lint fmt clean

build: ## build bin/batchctl
	$(GO) build -o $(BIN) ./cmd/batchctl

test: ## run the whole suite against a real Postgres (DATABASE_URL, or a throwaway cluster)
	./scripts/ensure-postgres.sh
	$(WITHPG) $(GO) test -race -count=1 ./...

lint: ## go vet and gofmt
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

clean:
	rm -rf bin
