# kkt — the two README commands and a few helpers.
#
#   make run    install what is missing, start the emulator and the service on http://127.0.0.1:8095/kkt
#   make test   install what the tests need (venv, Apache + mod_wsgi from Debian) and run them
#   make bench  run every script in bench/
#   make lint   ruff, and vermin: nothing newer than Python 3.10
#   make test-pythons  the tests under each CPython 3.10–3.13 that pyenv has (slow; not in CI)
#
# Installs are idempotent: the venv is rebuilt only when requirements*.txt change (stamp files),
# apt runs only when a Debian package is missing. `make run` and servers get requirements.txt (runtime);
# `make test`, `make lint` and `make venv` also requirements-dev.txt (tests and tools).

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
.DEFAULT_GOAL := help

# Supported interpreters: CPython 3.10–3.13 (see README). Override with `make run PYTHON=python3.12`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.kkt-requirements.stamp
DEV_STAMP := $(VENV)/.kkt-requirements-dev.stamp

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

.PHONY: help run test test-loaded bench lint venv apache-deps apache-venv clean-venv test-pythons mutate

help:
	@echo "make run    — установить недостающее и запустить сервис с эмулятором ККТ на http://$(HOST):$(PORT)/kkt"
	@echo "make test   — установить то, что нужно тестам (venv, Apache + mod_wsgi), и запустить тесты"
	@echo "make bench  — запустить замеры из bench/"
	@echo "make lint   — проверить код (ruff; vermin — ничего новее Python 3.10)"
	@echo "make test-pythons — тесты на каждом Python 3.10–3.13 из pyenv (долго)"
	@echo "make test-loaded — все тесты 5 раз подряд рядом с двумя процессами, занимающими процессор"
	@echo "make mutate — мутационная проверка протокола АТОЛ (mutmut; долго, в CI не входит)"

venv: $(DEV_STAMP)

# Runtime set only (what a server gets): `make run`.
$(VENV_STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] < (3, 10))' || \
	  { echo "Нужен Python 3.10 или новее: $(PYTHON) — $$($(PYTHON) -V 2>&1). Укажите другой: make PYTHON=python3.10 ..." >&2; exit 1; }
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || \
	  { echo "В $(PYTHON) нет модуля venv. Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }
	@test -x $(PY) || { echo "Создаю виртуальное окружение $(VENV) ..."; $(PYTHON) -m venv $(VENV); }
	@echo "Устанавливаю зависимости из requirements.txt в $(VENV) ..."
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt $(PIP_QUIET)
	@touch $@

# Runtime set + tests and tools (requirements-dev.txt includes requirements.txt).
$(DEV_STAMP): requirements-dev.txt $(VENV_STAMP)
	@echo "Устанавливаю инструменты разработки и тестов из requirements-dev.txt в $(VENV) ..."
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt $(PIP_QUIET)
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

test: $(DEV_STAMP) apache-deps $(APACHE_VENV_STAMP)
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# The whole suite LOADED_RUNS times with two CPU-burning processes beside it: a test that races
# or waits on a fixed time shows up here before it flakes in CI. Not part of .ci/run (slow).
LOADED_RUNS ?= 5
test-loaded: $(DEV_STAMP) apache-deps $(APACHE_VENV_STAMP)
	@burners=""; for i in 1 2; do ( while :; do :; done ) & burners="$$burners $$!"; done; \
	trap 'kill $$burners 2>/dev/null' EXIT; \
	failed=0; for i in $$(seq $(LOADED_RUNS)); do \
	  echo "== прогон $$i из $(LOADED_RUNS) под нагрузкой"; \
	  $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) || failed=$$((failed + 1)); \
	done; \
	echo "прогонов с ошибками: $$failed из $(LOADED_RUNS)"; test $$failed -eq 0

# Every bench/*.py that is a script (has a __main__ block); helpers such as bench/common.py are not,
# nor the scripts the benchmarks start themselves (BENCH_HELPERS).
BENCH_HELPERS := bench/multi_emulator.py
bench: $(DEV_STAMP)
	@scripts=$$(grep -l "^if __name__ == .__main__.:" bench/*.py 2>/dev/null | grep -v -x -F "$(BENCH_HELPERS)" | sort); \
	if [ -z "$$scripts" ]; then echo "В bench/ пока нет скриптов."; exit 0; fi; \
	for s in $$scripts; do echo "== $$s"; $(PY) "$$s" || exit 1; done

# vermin: the code must run on Ubuntu 22.04's Python 3.10 (README, «Версия Python»).
lint: $(DEV_STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/vermin -q --no-tips --violations --eval-annotations -t=3.10- kktapp tests bench conf.py kkt.wsgi

# The suite under each CPython 3.10–3.13 pyenv has, each in its own venv under var/ (not in .ci/run:
# it takes several times as long as `make test`). VERSIONS="3.12 3.13" narrows it.
test-pythons:
	@VERSIONS="$(VERSIONS)" PYTEST_ARGS="$(PYTEST_ARGS)" bash tests/test_pythons.sh

# Mutation check of kktapp/atol/{framing,codec,taskbuf,commands}.py ([tool.mutmut] in pyproject;
# slow, not in CI). A timeout counts as killed (the mutant changed behaviour); below 90 % fails.
mutate: $(DEV_STAMP)
	$(VENV)/bin/mutmut run --max-children 2
	@$(VENV)/bin/mutmut results --all true | awk -F': ' '{n++} $$2 == "killed" || $$2 == "timeout" {k++} \
	  END {p = n ? 100 * k / n : 0; printf "mutation score: %d killed of %d (%.1f %%)\n", k, n, p; exit p < 90}'

clean-venv:
	rm -rf $(VENV) $(APACHE_VENV)
