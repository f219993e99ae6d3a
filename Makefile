# screenlake: `make demo` runs the whole chain on synthetic data, `make test` runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DAGSTER_HOME := $(CURDIR)/var/dagster
DEMO_KEYS := $(CURDIR)/var/phi/keys

.PHONY: install servers demo demo-pacs test ui clean

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

# What the tests start or drive on loopback: Orthanc (with its DICOMweb plugin) from Debian, and
# Chromium, headless, to check that the programme report renders.
servers:
	@if ! command -v Orthanc >/dev/null 2>&1 || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc orthanc-dicomweb chromium >/dev/null; \
	  else \
	    echo "the tests need Orthanc and Chromium: run 'sudo apt-get install orthanc orthanc-dicomweb chromium' (Debian)" >&2; exit 1; \
	  fi; \
	fi

test: $(INSTALLED) servers
	$(BIN)/python -m pytest

# The UI on the demo's instance. Outside the demo, set the two keys in the environment.
ui: $(INSTALLED)
	mkdir -p $(DAGSTER_HOME) && cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	DAGSTER_HOME=$(DAGSTER_HOME) \
	SCREENLAKE_PSEUDONYM_KEY="$${SCREENLAKE_PSEUDONYM_KEY:-$$(cat $(DEMO_KEYS)/pseudonym.key 2>/dev/null)}" \
	SCREENLAKE_VAULT_KEY="$${SCREENLAKE_VAULT_KEY:-$$(cat $(DEMO_KEYS)/vault.key 2>/dev/null)}" \
	$(BIN)/dagster dev -m orchestration.definitions -h 127.0.0.1 -p 3000

clean:
	rm -rf var
