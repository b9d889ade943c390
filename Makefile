# certrot — the two commands a new user needs:
#   make demo   rotate 1,000 simulated devices through a real mosquitto on this machine
#   make test   unit and integration tests (real mosquitto, real SQLite), then a small demo run
SWIFT ?= swift
DEMO_DEVICES ?= 1000
SMOKE_DEVICES ?= 100

.PHONY: all bootstrap build release test unit demo demo-smoke clean

all: build

bootstrap:
	@scripts/bootstrap

build: bootstrap
	$(SWIFT) build

release: bootstrap
	$(SWIFT) build -c release

test: build
	$(SWIFT) test
	$(MAKE) demo-smoke

demo: build
	.build/debug/certrot demo --devices $(DEMO_DEVICES)

demo-smoke:
	.build/debug/certrot demo --devices $(SMOKE_DEVICES) --timeout 120

clean:
	rm -rf .build
