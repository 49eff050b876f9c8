# flatnet: a BGP-routed pod network. `make help` lists the targets.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO       ?= go
BIN      := $(CURDIR)/bin
BINARIES := flatnet-agent flatnet flatnetctl flatnet-lab
# Debian packages the tests and the lab need; `make deps` installs the missing ones.
DEB_PKGS := iproute2 iputils-ping protobuf-compiler libprotobuf-dev containernetworking-plugins iptables nftables frr bird2 etcd-server iperf3 containerd runc
GOLANGCI_LINT_VERSION := v2.15.0
BENCH_COUNT ?= 6

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## install the missing Debian packages the tests and the lab need (root)
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

.PHONY: build
build: ## build the binaries into bin/
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(BINARIES))

# `make image` tags flatnet's images with VERSION and stamps it into the
# binaries. It defaults to the tag deploy/kustomization.yaml names, so that
# the DaemonSet runs what was built; `make image VERSION=$(git describe
# --tags --always --dirty)` for anything else (then set the kustomization's
# newTag to match).
VERSION ?= $(shell sed -n 's/^ *newTag: *//p' deploy/kustomization.yaml)

.PHONY: image
image: ## build the images (flatnet; the lab's pause and echo) as archives in bin/images/, no container engine; VERSION=tag
	$(GO) run ./cmd/flatnet-image --go $(GO) --version $(VERSION) --out $(BIN)/images

# The Kubernetes tests and the real-node lab run the upstream Kubernetes
# binaries, built from the Go module proxy in their own module
# (test/kube/apiserver) as ONE multi-call binary, `kube` (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy: one compile of
# what they share, one link), with a symlink per name. It is cached per
# machine, keyed by that module's go.sum, so the build is paid once.
KUBE_VERSION := v1.34.2
KUBE_CACHE ?= $(HOME)/.cache/flatnet/kube-$(shell sha256sum test/kube/apiserver/go.sum | cut -c1-12)
KUBE_NAMES := kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy
KUBE_LDFLAGS := -X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34 -X k8s.io/component-base/version.gitTreeState=clean
export FLATNET_KUBE_BIN := $(KUBE_CACHE)

.PHONY: kube-bins
kube-bins: ## build the Kubernetes binaries (one multi-call binary) once per machine, and kubectl if the machine has none
	@test -x $(KUBE_CACHE)/kube || { echo "building $(KUBE_NAMES) as one binary into $(KUBE_CACHE) (once per machine, minutes)"; \
		mkdir -p $(KUBE_CACHE) && cd test/kube/apiserver && $(GO) build -trimpath -ldflags '$(KUBE_LDFLAGS)' -o $(KUBE_CACHE)/.kube.tmp ./cmd/kube && mv $(KUBE_CACHE)/.kube.tmp $(KUBE_CACHE)/kube; }
	@for n in $(KUBE_NAMES); do test -L $(KUBE_CACHE)/$$n || ln -sf kube $(KUBE_CACHE)/$$n; done
	@command -v kubectl >/dev/null || test -x $(KUBE_CACHE)/kubectl || { echo "building kubectl into $(KUBE_CACHE)"; \
		cd test/kube/apiserver && $(GO) build -o $(KUBE_CACHE)/.kubectl.tmp ./cmd/kubectl && mv $(KUBE_CACHE)/.kubectl.tmp $(KUBE_CACHE)/kubectl; }

.PHONY: test
test: deps build kube-bins image ## run the whole test suite (as root, the way CI does)
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) test -race -count=1 ./...
	@echo "== the patch flatnet carries in third_party/gobgp (its own module)"
	cd third_party/gobgp && $(GO) test -race -count=1 -run 'TestFSMHandlerEstablish' ./pkg/server

.PHONY: lint
lint: ## gofmt, go vet and golangci-lint (installed from the Go module proxy if missing)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	@test -x $(BIN)/tools/golangci-lint || GOBIN=$(BIN)/tools $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	$(BIN)/tools/golangci-lint run ./...

.PHONY: bench
bench: deps build kube-bins image ## run the benchmarks side by side with their references; medians via benchstat (bin/bench/*.txt)
	@mkdir -p $(BIN)/bench
	@test -x $(BIN)/tools/benchstat || GOBIN=$(BIN)/tools $(GO) install golang.org/x/perf/cmd/benchstat@latest
	@echo "== IPAM: file store vs host-local's store; the agent's socket round trip"
	$(GO) test -run '^$$' -bench . -benchtime 1000x -count $(BENCH_COUNT) ./ipam/filestore ./agent/ | tee $(BIN)/bench/ipam.txt
	$(BIN)/tools/benchstat $(BIN)/bench/ipam.txt
	@echo "== IPAM on the Kubernetes store vs the file store (a real kube-apiserver + etcd)"
	$(GO) test -run '^$$' -bench . -benchtime 1000x -count 3 ./ipam/kubestore | grep -v '^ *time=' | tee $(BIN)/bench/kubestore.txt
	$(BIN)/tools/benchstat $(BIN)/bench/kubestore.txt
	@echo "== CNI: flatnet vs ptp+host-local through libcni"
	$(GO) test -run '^$$' -bench 'CNI/.*/op=sequential' -benchtime 100x -count 3 ./cni/ | grep -v '^ *time=' | tee $(BIN)/bench/cni.txt
	$(GO) test -run '^$$' -bench 'CNI/.*/op=20-concurrent' -benchtime 10x -count 3 ./cni/ | grep -v '^ *time=' | tee -a $(BIN)/bench/cni.txt
	$(BIN)/tools/benchstat -col /impl $(BIN)/bench/cni.txt
	@echo "== Route install: the dataplane reconciler vs ip -batch (10k routes)"
	$(GO) test -run '^$$' -bench RouteInstall -benchtime 5x -count 5 ./dataplane/ | tee $(BIN)/bench/dataplane.txt
	$(BIN)/tools/benchstat $(BIN)/bench/dataplane.txt
	@echo "== BGP: routes from a peer into the kernel, flatnet vs FRR (bgpd+zebra) vs ip -batch; block convergence; RSS"
	$(GO) test -run '^$$' -bench . -benchtime 1x -count 3 -timeout 15m ./test/e2e/bgpbench/ | grep -v '^ *time=' | tee $(BIN)/bench/bgp.txt
	$(BIN)/tools/benchstat $(BIN)/bench/bgp.txt
	@echo "== Lab: pod->pod vs node->node over the same underlay (iperf3, TCP request/response); time to reachable"
	$(GO) test -run '^$$' -bench . -benchtime 1x -count 5 ./test/e2e/lab/ | grep -v '^ *time=' | tee $(BIN)/bench/lab.txt
	$(BIN)/tools/benchstat $(BIN)/bench/lab.txt
	@echo "== Pod start on real nodes (kubelet + containerd): 50 pods, creation -> Running and -> first packet, flatnet vs ptp+host-local"
	@# One lab per run, flatnet then ptp in it (-count would repeat each impl back to back).
	for i in 1 2 3; do $(GO) test -run '^$$' -bench PodStart -benchtime 1x -count 1 -timeout 30m ./test/e2e/kubelet/ || exit 1; done | grep -v '^ *time=' | tee $(BIN)/bench/podstart.txt
	$(BIN)/tools/benchstat -col /impl $(BIN)/bench/podstart.txt

.PHONY: fuzz
fuzz: ## fuzz the allocator for FUZZTIME (default 60s); the seed corpus runs in `make test`
	$(GO) test ./ipam/ -run '^$$' -fuzz FuzzAllocator -fuzztime $${FUZZTIME:-60s}

.PHONY: generate
generate: ## regenerate the protobuf code (protoc from Debian, plugins pinned in go.mod)
	$(GO) build -o $(BIN)/tools/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
	PATH=$(BIN)/tools:$$PATH protoc --go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative ipam/ipampb/ipam.proto agent/agentpb/agent.proto

# LAB is a topology's name in test/topologies (or a path to a topology file).
LAB ?= two-node-tor
# DATASTORE=kubernetes runs the lab on its own kube-apiserver (built once by kube-bins).
DATASTORE ?= file
# KUBELET=1 runs kubelet-tor: real nodes (containerd, kubelet, kube-proxy) and
# flatnet's DaemonSet from its image, Services through kube-proxy (docs/lab.md).
ifneq ($(KUBELET),)
LAB := kubelet-tor
DATASTORE := kubernetes
endif

.PHONY: lab
lab: deps build $(if $(filter kubernetes,$(DATASTORE)),kube-bins) $(if $(KUBELET),image) ## bring up the lab (LAB=topology name or file, default two-node-tor; DATASTORE=file|kubernetes; KUBELET=1: real nodes), 2 pods a node, and show them talking
	$(BIN)/flatnet-lab up -t $(LAB) --pods 2 --datastore $(DATASTORE)

.PHONY: lab-down
lab-down: ## tear the lab down: namespaces, links, processes, files
	$(BIN)/flatnet-lab down -t $(LAB)

.PHONY: clean
clean: ## remove build output
	rm -rf $(BIN)
