# Attested KMS. `make demo` and `make test` are the two commands a new
# machine needs; everything else is for developers.
GO        ?= go
BIN       := bin
PKGS      := ./...
FUZZTIME  ?= 10s

.PHONY: all build test demo ha-demo bench proto proto-check lint fuzz clean fixtures

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

test:
	$(GO) test -count=1 -timeout 10m $(PKGS)

demo: build
	./scripts/demo.sh

# Three kms serve replicas on a three-member development etcd cluster:
# rotation leader failover, an etcd member lost, per-replica audit logs.
ha-demo: build
	./scripts/ha-demo.sh

bench:
	./scripts/bench.sh

# Regenerate the committed gRPC code with Debian's protoc and the plugins
# pinned by the tool directives in go.mod.
proto:
	protoc -I proto -I /usr/include \
		--plugin=protoc-gen-go=$$($(GO) tool -n protoc-gen-go) \
		--plugin=protoc-gen-go-grpc=$$($(GO) tool -n protoc-gen-go-grpc) \
		--go_out=. --go_opt=module=github.com/attested-kms/attested-kms \
		--go-grpc_out=. --go-grpc_opt=module=github.com/attested-kms/attested-kms \
		proto/kms/v1/kms.proto

lint:
	@test -z "$$(gofmt -l . | tee /dev/stderr)" || { echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)
	$(GO) test -count=1 -run TestGeneratedCodeIsCurrent ./proto/...

# A short run of every fuzz target; FUZZTIME=1m make fuzz for longer.
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

# Regenerate the generated fixtures (test/fixtures/*/README.md say which
# and how deterministic they are); genuine recordings are only copied.
fixtures:
	$(GO) run ./test/fixtures/gen -dir test/fixtures

clean:
	rm -rf $(BIN)
