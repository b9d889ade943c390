# certrot — the two commands a new user needs:
#   make demo   rotate 1,000 simulated devices through a real mosquitto on this machine
#   make test   Swift unit and integration tests (real mosquitto, real SQLite), the C device library's tests
#               (fake modem, cross-implementation vectors, end to end), then a small demo run
SWIFT ?= swift
DEMO_DEVICES ?= 1000
SMOKE_DEVICES ?= 100

.PHONY: all bootstrap build release test device-test demo demo-smoke clean

all: build

bootstrap:
	@scripts/bootstrap

build: bootstrap
	$(SWIFT) build

release: bootstrap
	$(SWIFT) build -c release

test: build
	$(SWIFT) test
	$(MAKE) device-test
	$(MAKE) demo-smoke

device-test: build
	$(MAKE) -C device test CERTROT_BIN=$(CURDIR)/.build/debug/certrot

demo: build
	.build/debug/certrot demo --devices $(DEMO_DEVICES)

demo-smoke:
	.build/debug/certrot demo --devices $(SMOKE_DEVICES) --timeout 120

clean:
	rm -rf .build
	$(MAKE) -C device clean
