# screenlake: `make demo` runs the whole chain on synthetic data, `make test` runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install servers demo demo-pacs test ui stack stack-stop worker image clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/python -m orchestration.demo

# The same demo pulled from a throwaway Orthanc on loopback: DEMO_PACS=dicomweb (default) or dimse.
demo-pacs: $(INSTALLED) servers
	$(BIN)/python -m orchestration.demo_pacs

# What the tests start or drive on loopback: Orthanc (with its DICOMweb plugin) from Debian,
# Chromium, headless, to check that the programme report renders, and PostgreSQL and Redis for
# the production-shaped stack (`make stack` and tests/deploy).
SERVER_PACKAGES := orthanc orthanc-dicomweb chromium postgresql redis-server
servers:
	@if ! command -v Orthanc >/dev/null 2>&1 || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || ! command -v chromium >/dev/null 2>&1 \
	    || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v redis-server >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SERVER_PACKAGES) >/dev/null; \
	  else \
	    echo "the tests need $(SERVER_PACKAGES): run 'sudo apt-get install $(SERVER_PACKAGES)' (Debian)" >&2; exit 1; \
	  fi; \
	fi

test: $(INSTALLED) servers
	$(BIN)/python -m pytest

# The UI (dagster dev) on the demo's instance at http://127.0.0.1:$(UI_PORT) (README, Two
# commands). The launcher, not this recipe, decides on keys (the demo's only for the demo's own
# instance) and stops the whole tree on SIGINT or SIGTERM; one command, so make execs it directly
# and passes it the SIGTERM a script sends to make.
UI_PORT ?= 3000
ui: $(INSTALLED)
	$(BIN)/python -m orchestration.ui --port $(UI_PORT)

# The production shape on one host: PostgreSQL, Redis, the gRPC code server, one daemon, the
# webserver and a Celery worker per queue, each stopped by its process id (state in var/stack).
# The site's settings (keys, zones, PACS) come from the environment, as for a deployment.
stack: $(INSTALLED) servers
	$(BIN)/python -m screenlake.devservers.stack start

stack-stop: $(INSTALLED)
	$(BIN)/python -m screenlake.devservers.stack stop

# One more Celery worker, in the foreground, on the stack's broker: make worker QUEUE=gpu
QUEUE ?= dagster
worker: $(INSTALLED)
	$(BIN)/python -m screenlake.devservers.stack worker --queue $(QUEUE)

# The code-location image (podman or buildah), built locally: deploy/build-image.sh
image:
	deploy/build-image.sh

clean:
	rm -rf var
