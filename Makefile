# certrot — the two commands a new user needs:
#   make demo   rotate 1,000 simulated devices through a real mosquitto on this machine
#   make test   swift format lint, Swift unit, engine and integration tests (real mosquitto, SQLite, PostgreSQL),
#               the engine fuzzer for ENGINE_FUZZ_SECONDS, the C device library's tests (fake modem, Nordic's
#               parser, cross-implementation vectors, end to end, ASan/UBSan, libFuzzer for DEVICE_FUZZ_SECONDS
#               per target), then a small demo and benchmark run
# and, for the numbers in docs/performance.md:
#   make bench  release build, then the benchmark (BENCH_DEVICES devices); figures in bench/results.json
#   make bench-cluster  SQLite, one daemon on PostgreSQL and three replicas in one run (BENCH_CLUSTER_DEVICES)
SWIFT ?= swift
DEMO_DEVICES ?= 1000
SMOKE_DEVICES ?= 100
BENCH_DEVICES ?= 100000
BENCH_CLUSTER_DEVICES ?= 10000
# The engine fuzzer's time in make test (it runs alone, after the other Swift tests).
ENGINE_FUZZ_SECONDS ?= 15

.PHONY: all bootstrap build release lint format test device-test demo demo-smoke bench bench-cluster bench-smoke screenshots clean

all: build

bootstrap:
	@scripts/bootstrap

build: bootstrap
	$(SWIFT) build

release: bootstrap
	$(SWIFT) build -c release

# The cluster suite (three daemons and PostgreSQL on 2 cores) runs alone after the others: run beside them it
# starved the tests that measure ordering (a bundle ahead of a flood of reads; every request answered).
test: build lint mosquitto-plugin
	$(SWIFT) test --skip ClusterTests
	$(SWIFT) test --skip-build --filter ClusterTests
	CERTROT_ENGINE_FUZZ_SECONDS=$(ENGINE_FUZZ_SECONDS) $(SWIFT) test --skip-build --filter EngineFuzzTests
	$(MAKE) device-test
	$(MAKE) demo-smoke
	$(MAKE) bench-smoke

# The broker plugin that enforces certrot's CRLs without a restart (deploy/mosquitto/plugin; docs/client-certificates.md):
# mosquitto's plugin API v5 (Debian's mosquitto-dev) and OpenSSL (libssl-dev), both installed by bootstrap.
MOSQUITTO_PLUGIN := .build/mosquitto/certrot_revocation.so
mosquitto-plugin: bootstrap $(MOSQUITTO_PLUGIN)
$(MOSQUITTO_PLUGIN): deploy/mosquitto/plugin/certrot_revocation.c
	mkdir -p $(dir $@)
	$(CC) -shared -fPIC -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -o $@ $< -lssl -lcrypto

# .swift-format: 4 spaces, 120 columns. `make format` rewrites the tree; `make lint` (part of make test) checks it.
lint:
	$(SWIFT) format lint --strict --recursive Sources Tests

format:
	$(SWIFT) format format --in-place --recursive Sources Tests

# The C device library: unit tests (also under ASan + UBSan), Nordic's parser on the fake modem's KEYGEN answers,
# cross-implementation vectors, end to end, then its libFuzzer targets for DEVICE_FUZZ_SECONDS each.
DEVICE_FUZZ_SECONDS ?= 15
device-test: build
	$(MAKE) -C device test CERTROT_BIN=$(CURDIR)/.build/debug/certrot
	$(MAKE) -C device asan
	$(MAKE) -C device fuzz CERTROT_BIN=$(CURDIR)/.build/debug/certrot FUZZ_SECONDS=$(DEVICE_FUZZ_SECONDS)

demo: build
	.build/debug/certrot-lab demo --devices $(DEMO_DEVICES)

# The demo as a new user sees it, which must log no error or critical line (a clean shutdown logs none).
demo-smoke:
	.build/debug/certrot-lab demo --devices $(SMOKE_DEVICES) --timeout 120 > .build/demo-smoke.log 2>&1; \
	  status=$$?; cat .build/demo-smoke.log; [ $$status -eq 0 ] || exit $$status; \
	  if grep -nE '(^| )(error|critical) ' .build/demo-smoke.log; then echo "make demo logged the lines above"; exit 1; fi

bench: release
	.build/release/certrot-lab bench --devices $(BENCH_DEVICES) --out bench/results.json

# The cluster's figures beside SQLite's, from one run (docs/scaling.md): the targets are ratios within it.
bench-cluster: release
	.build/release/certrot-lab bench --devices $(BENCH_CLUSTER_DEVICES) --known "" --no-recovery --replicas 1,3 \
		--out bench/results-cluster.json

# A tiny run so that the benchmark cannot rot; its figures mean nothing (debug build, 200 devices).
bench-smoke:
	.build/debug/certrot-lab bench --devices 200 --known 2000 --sign-seconds 1 --timeout 300 --replicas 1 \
		--out .build/bench-smoke.json

# The console's screenshots in README, retaken by its browser test (headless Chromium, 1280 px).
screenshots: build
	CERTROT_SCREENSHOTS=$(CURDIR)/docs/console $(SWIFT) test --skip-build --filter ConsoleTests

clean:
	rm -rf .build
	$(MAKE) -C device clean
