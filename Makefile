# The two commands a newcomer needs: `make run` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: run test unit integration lint format install browser infra-up infra-down infra-status infra-reset clean bench chaos

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

install: $(INSTALLED)

# The dashboard's browser tests drive Debian's Chromium, never a browser downloaded by Playwright.
# As root it is installed when missing; otherwise the message says what to install.
CHROMIUM := /usr/bin/chromium
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's Chromium for the dashboard's browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "make test needs Debian's Chromium at $(CHROMIUM): run 'apt-get install chromium' as root" >&2; \
	    exit 1; \
	  fi; \
	fi

# What `make run` and `make bench` connect to: the local infrastructure on the ports infra.sh
# uses (QBO_KAFKA_PORT, QBO_MONGO_PORT), unless KAFKA_BOOTSTRAP_SERVERS / MONGODB_URI say otherwise.
# (FerretDB's PostgreSQL, on QBO_POSTGRES_PORT, is FerretDB's business only.)
LOCAL_ENDPOINTS := KAFKA_BOOTSTRAP_SERVERS="$${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:$${QBO_KAFKA_PORT:-9092}}" \
	MONGODB_URI="$${MONGODB_URI:-mongodb://127.0.0.1:$${QBO_MONGO_PORT:-27017}/}"

infra-up:
	@deploy/local/infra.sh up

infra-down:
	@deploy/local/infra.sh down

infra-status:
	@deploy/local/infra.sh status

infra-reset:
	@deploy/local/infra.sh reset

## make run: infrastructure + QBO emulator + services, in the foreground (Ctrl-C stops them).
run: install infra-up
	@$(LOCAL_ENDPOINTS) deploy/local/run.sh

## make test: lint, then the whole suite against real Kafka, FerretDB (on PostgreSQL), the
## emulator and Chromium, each installed first when missing.
test: install browser infra-up lint
	$(PY) -m pytest

unit: install
	$(PY) -m pytest tests/unit tests/emulator

integration: install infra-up
	$(PY) -m pytest tests/integration

## make bench: the benchmark figures as a table (also .local/bench/results.json); sizes with
## ARGS, e.g. make bench ARGS="--invoices 10000".
bench: install infra-up
	$(LOCAL_ENDPOINTS) $(PY) -m bench $(ARGS)

## make chaos: the fault suite on a Kafka + FerretDB + PostgreSQL of its own (ports
## 19192/19193/27217/15632);
## exits non-zero if an invoice was lost, duplicated or stale. ARGS="--seed N" replays a run.
chaos: install
	$(PY) -m bench.chaos $(ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: infra-down
	rm -rf .local $(VENV) .pytest_cache .mypy_cache .ruff_cache
