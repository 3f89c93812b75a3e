# The studio's two commands: `make run` and `make test` (see README).
VENV := .venv
PY := $(VENV)/bin/python
export STUDIO_DATA_DIR ?= $(CURDIR)/var

.PHONY: run test install install-test lint

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py studio_bootstrap
	exec $(PY) -m portal.supervisor

test: install-test
	$(VENV)/bin/ruff check .
	STUDIO_DATA_DIR=$(CURDIR)/var/test $(PY) -m pytest

install:
	@bash scripts/install.sh run

install-test:
	@bash scripts/install.sh test

lint: install-test
	$(VENV)/bin/ruff check .
