#!/usr/bin/env bash
# `make test-pythons`: the test suite under each CPython that a supported distribution's mod_wsgi
# embeds (Ubuntu 22.04 → 3.10, Debian 12 → 3.11, Ubuntu 24.04 → 3.12, Debian 13 → 3.13).
#
# Interpreters come from pyenv (`pyenv versions`; the newest patch release of each minor version),
# else python3.X on PATH. Each gets its own venv under var/pythons/ with requirements-dev.txt,
# rebuilt only when the requirements change. The Apache tests are left out: they run the
# application in var/apache-venv, the system Python that Debian's mod_wsgi embeds, whichever
# interpreter runs pytest, so `make test` covers them. Our own DeprecationWarnings are errors
# (pyproject.toml), so what the next Python removes shows up here first.
#
# One line per version: passed / failed (log file) / not found. Exit 1 if a found version failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VERSIONS=${VERSIONS:-"3.10 3.11 3.12 3.13"}
PYTEST_ARGS=${PYTEST_ARGS:-}
OUT=var/pythons
mkdir -p "$OUT"

find_python() {  # find_python 3.10 → path of an interpreter, or nothing
  local minor=$1 found=""
  if command -v pyenv >/dev/null 2>&1; then
    found=$(pyenv versions --bare --skip-aliases 2>/dev/null | grep -E "^${minor//./\\.}\.[0-9]+$" | sort -V | tail -n 1)
    if [ -n "$found" ] && [ -x "$(pyenv root)/versions/$found/bin/python" ]; then
      echo "$(pyenv root)/versions/$found/bin/python"
      return
    fi
  fi
  command -v "python$minor" 2>/dev/null || true
}

venv_for() {  # venv_for 3.10 /path/to/python LOG → prints the venv's python; 1 on failure
  local minor=$1 python=$2 log=$3 venv="$OUT/venv-$1"
  local want
  want="$("$python" -V 2>&1) $(cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)"
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.kkt-stamp" 2>/dev/null)" != "$want" ]; then
    rm -rf "$venv"
    "$python" -m venv "$venv" >>"$log" 2>&1 || return 1
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r requirements-dev.txt >>"$log" 2>&1 \
      || return 1
    echo "$want" >"$venv/.kkt-stamp"
  fi
  echo "$venv/bin/python"
}

failed=0
results=()
for minor in $VERSIONS; do
  python=$(find_python "$minor")
  if [ -z "$python" ]; then
    results+=("Python $minor: not found")
    echo "Python $minor: not found"
    continue
  fi
  full=$("$python" -c 'import platform; print(platform.python_version())')
  log="$OUT/test-$minor.log"
  : >"$log"
  echo "Python $minor ($full, $python): installing and running the tests, log in $log ..."
  start=$SECONDS
  if vpy=$(venv_for "$minor" "$python" "$log") \
      && "$vpy" -m pytest -q -p no:cacheprovider \
           -k "not apache" \
           $PYTEST_ARGS >>"$log" 2>&1; then
    line="Python $minor ($full): passed — $(grep -E '[0-9]+ passed' "$log" | tail -n 1) [$((SECONDS - start)) s]"
  else
    failed=1
    line="Python $minor ($full): FAILED — $(grep -E '[0-9]+ (passed|failed)|error' "$log" | tail -n 1) (see $log)"
  fi
  results+=("$line")
  echo "$line"
done

echo
echo "== make test-pythons"
printf '%s\n' "${results[@]}"
exit "$failed"
