# kkt — the two README commands and a few helpers.
#
#   make run    install what is missing, start the emulator and the service on http://127.0.0.1:8095/kkt
#   make test   install what the tests need (venv, Apache + mod_wsgi from Debian) and run them
#   make bench  run every script in bench/
#   make lint   ruff
#
# Installs are idempotent: the venv is rebuilt only when requirements.txt changes (stamp files),
# apt runs only when a Debian package is missing.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
.DEFAULT_GOAL := help

# Supported interpreter: CPython 3.11 (see README). Override with `make run PYTHON=python3.11`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.kkt-requirements.stamp

# Apache test: Debian's mod_wsgi embeds the system Python (/usr/bin/python3), so the application
# runs under Apache from a second venv built from that interpreter, exactly as on a server.
SYSTEM_PYTHON ?= /usr/bin/python3
APACHE_VENV := var/apache-venv
APACHE_VENV_STAMP := $(APACHE_VENV)/.kkt-requirements.stamp
APT_PACKAGES := apache2 libapache2-mod-wsgi-py3 python3-venv openssl chromium chromium-driver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

HOST ?= 127.0.0.1
PORT ?= 8095
EMULATOR_PORT ?= 5555
PYTEST_ARGS ?=
# pip's global config here names local indexes that may be absent; its warning about them is noise.
PIP_QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: help run test bench lint venv apache-deps apache-venv clean-venv

help:
	@echo "make run    — установить недостающее и запустить сервис с эмулятором ККТ на http://$(HOST):$(PORT)/kkt"
	@echo "make test   — установить то, что нужно тестам (venv, Apache + mod_wsgi), и запустить тесты"
	@echo "make bench  — запустить замеры из bench/"
	@echo "make lint   — проверить код (ruff)"

venv: $(VENV_STAMP)

$(VENV_STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' || \
	  { echo "Нужен Python 3.11 или новее: $(PYTHON) — $$($(PYTHON) -V 2>&1). Укажите другой: make PYTHON=python3.11 ..." >&2; exit 1; }
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || \
	  { echo "В $(PYTHON) нет модуля venv. Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }
	@test -x $(PY) || { echo "Создаю виртуальное окружение $(VENV) ..."; $(PYTHON) -m venv $(VENV); }
	@echo "Устанавливаю зависимости из requirements.txt в $(VENV) ..."
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt $(PIP_QUIET)
	@touch $@

run: $(VENV_STAMP)
	@HOST=$(HOST) PORT=$(PORT) EMULATOR_PORT=$(EMULATOR_PORT) PY=$(PY) bash deploy/run-demo.sh

# Debian packages for the Apache end-to-end test; apt-get update runs only when one is missing.
apache-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "Устанавливаю пакеты Debian:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

apache-venv: $(APACHE_VENV_STAMP)

$(APACHE_VENV_STAMP): requirements.txt | apache-deps
	@test -x $(APACHE_VENV)/bin/python || { echo "Создаю $(APACHE_VENV) из $(SYSTEM_PYTHON) (для mod_wsgi) ..."; \
	  mkdir -p var && $(SYSTEM_PYTHON) -m venv $(APACHE_VENV); }
	@$(APACHE_VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt $(PIP_QUIET)
	@touch $@

test: $(VENV_STAMP) apache-deps $(APACHE_VENV_STAMP)
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Every bench/*.py that is a script (has a __main__ block); helpers such as bench/common.py are not.
bench: $(VENV_STAMP)
	@scripts=$$(grep -l "^if __name__ == .__main__.:" bench/*.py 2>/dev/null | sort); \
	if [ -z "$$scripts" ]; then echo "В bench/ пока нет скриптов."; exit 0; fi; \
	for s in $$scripts; do echo "== $$s"; $(PY) "$$s" || exit 1; done

lint: $(VENV_STAMP)
	$(PY) -m ruff check .

clean-venv:
	rm -rf $(VENV) $(APACHE_VENV)
