# cri-mirror-proxy. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
TAGS := containers_image_openpgp
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN := bin/cri-mirror-proxy
TESTBIN := bin/test
export CGO_ENABLED ?= 0

.PHONY: help build image testbin run test unit fuzz e2e soak critest critest-runtime critest-crio bench gobench lint tools clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build bin/cri-mirror-proxy (static, no cgo)
	CGO_ENABLED=0 $(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/cri-mirror-proxy

IMAGE ?= cri-mirror-proxy:$(VERSION)
IMAGE_TAR := bin/cri-mirror-proxy-image.tar
BUSYBOX ?= /bin/busybox
image: build ## the container image (as the Containerfile) without an engine, to bin/cri-mirror-proxy-image.tar named IMAGE (needs busybox-static)
	$(GO) run ./test/image -binary $(BIN) -busybox $(BUSYBOX) -unit deploy/systemd/cri-mirror-proxy.service \
		-tag '$(IMAGE)' -version '$(VERSION)' -o $(IMAGE_TAR)

testbin: ## build the test programs (test/envtool, the bench driver) into TESTBIN (default bin/test)
	$(GO) build -tags '$(TAGS)' -o $(TESTBIN)/ ./test/envtool ./test/bench

run: ## install what is missing and run the demo (a local registry + containerd, or RUNTIME_ENDPOINT=...)
	bash test/demo.sh

test: unit image e2e critest critest-runtime critest-crio ## everything: unit tests, the image, e2e on real containerd, CRI-O + registry, critest through the proxy on both runtimes

# test/parity is a module of its own (its references stay out of go.mod);
# -mod=mod follows the root module's requirements when they change;
# without cgo, as two containers/storage versions both bring unshare.c.
unit: ## unit tests with the race detector, and the differential tests of test/parity (no root, loopback only)
	$(GO) vet -tags '$(TAGS)' ./...
	CGO_ENABLED=1 $(GO) test -race -tags '$(TAGS)' -count=1 ./...
	cd test/parity && CGO_ENABLED=0 $(GO) vet -mod=mod ./... && CGO_ENABLED=0 $(GO) test -mod=mod -count=1 ./...

FUZZTIME ?= 30s
fuzz: ## run each fuzzer for FUZZTIME (default 30s)
	$(GO) test -tags '$(TAGS)' -run '^$$' -fuzz '^FuzzResolve$$' -fuzztime $(FUZZTIME) ./resolver/
	$(GO) test -tags '$(TAGS)' -run '^$$' -fuzz '^FuzzNames$$' -fuzztime $(FUZZTIME) ./proxy/

e2e: tools ## end-to-end tests on a real containerd and registry (root)
	$(GO) test -tags 'e2e $(TAGS)' -count=1 -timeout 40m -v ./test/e2e/

soak: tools ## long e2e variants: repeated SIGKILL during pulls, 10,000-call load bursts (root)
	$(GO) test -tags 'e2e soak $(TAGS)' -count=1 -timeout 30m -v -run 'TestSigkillDuringPulls|TestLoad' ./test/e2e/

critest: tools build ## critest image conformance through the proxy in front of containerd (root)
	bash test/critest.sh

critest-runtime: tools build ## critest runtime specs (sandbox, container, exec, attach, logs) with the proxy as both endpoints of containerd (root)
	CRITEST_SUITE=runtime bash test/critest.sh

critest-crio: tools build ## critest image conformance through the proxy in front of CRI-O (root)
	CRITEST_RUNTIME=crio bash test/critest.sh

bench: tools ## benchmark harness on real containerd + registry: ratios vs a reference hop, written to test/bench/RESULTS.md (root, ~16–19 min)
	bash test/bench.sh

gobench: ## Go micro-benchmarks (store, resolver, proxy)
	$(GO) test -tags '$(TAGS)' -run '^$$' -bench . -benchmem ./store/ ./resolver/ ./proxy/

lint: ## gofmt, go vet, staticcheck (the e2e suite with its build tags too)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet -tags '$(TAGS)' ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 -tags '$(TAGS)' ./...
	$(GO) vet -tags 'e2e soak $(TAGS)' ./test/e2e/
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 -tags 'e2e soak $(TAGS)' ./test/e2e/

tools: ## install containerd, runc, docker-registry, conmon (apt) and crane, crictl, critest, crio (go)
	bash test/tools.sh

clean: ## remove build output
	rm -rf bin
