#!/usr/bin/env bash
# `make run`: the built-in ATOL 55F emulator in the background and the service under gunicorn in
# the foreground, both on loopback; the emulator stops when the service stops (trap).
# The emulator's control port is a free port the kernel picks (--control-port 0), so it cannot
# collide with anything; it is written to var/emulator-control.port for
# `python -m kktapp.atol.emulator control …`.
# `make run SHTRIH=1` also starts the Shtrih-M emulator (port SHTRIH_PORT, 7778) as register 2.
# Messages are for a person trying the service: Russian.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8095}
EMULATOR_PORT=${EMULATOR_PORT:-5555}
SHTRIH=${SHTRIH:-}
SHTRIH_PORT=${SHTRIH_PORT:-7778}
PY=${PY:-.venv/bin/python}
VAR="$ROOT/var"
mkdir -p "$VAR"
CONTROL_PORT_FILE="$VAR/emulator-control.port"

# A port nothing listens on now, for the hints below.
free_port() {
  "$PY" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Is anything accepting connections on host:port?
port_busy() {
  "$PY" -c 'import socket, sys
s = socket.socket(); s.settimeout(1)
sys.exit(0 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 1)' "$1" "$2"
}

if port_busy "$HOST" "$PORT"; then
  cat >&2 <<EOF
Порт $PORT уже занят (Address already in use): на $HOST:$PORT уже кто-то принимает соединения.
Возможно, сервис уже запущен в другом окне — откройте http://$HOST:$PORT/kkt.
Кто занял порт:            ss -ltnp 'sport = :$PORT'
Запустить на другом порту: make run PORT=$((PORT + 1))
EOF
  exit 1
fi
if port_busy 127.0.0.1 "$EMULATOR_PORT"; then
  cat >&2 <<EOF
Порт эмулятора $EMULATOR_PORT уже занят (Address already in use) — возможно, эмулятор уже запущен.
Кто занял порт:             ss -ltnp 'sport = :$EMULATOR_PORT'
Эмулятор на другом порту:   make run EMULATOR_PORT=$(free_port)
EOF
  exit 1
fi

EMU_PID=""
SHTRIH_PID=""
GUNICORN_PID=""
stop_pid() {  # stop_pid PID SECONDS: SIGTERM, wait, then SIGKILL
  local pid=$1 n=$(( $2 * 10 ))
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq "$n"); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}
cleanup() {
  # Ignore the next INT/TERM: make forwards a SIGTERM to us, which would cut the clean-up short.
  trap - EXIT
  trap "" INT TERM
  if [ -n "$GUNICORN_PID" ] && kill -0 "$GUNICORN_PID" 2>/dev/null; then
    stop_pid "$GUNICORN_PID" 15
  fi
  for pid in "$EMU_PID" "$SHTRIH_PID"; do
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then stop_pid "$pid" 5; fi
  done
  rm -f "$CONTROL_PORT_FILE"
  if [ "$STARTED" = 1 ]; then echo "Сервис и эмулятор ККТ остановлены."; fi
}
STARTED=0
trap cleanup EXIT
# Ctrl+C / SIGTERM is the normal way to stop the demo: not an error.
trap 'exit 0' INT TERM

rm -f "$CONTROL_PORT_FILE"
# Emptied here, not by the emulator's own redirection: that happens in the child, possibly after
# the loop below has read the last run's "ready" line.
: >"$VAR/emulator.out"
"$PY" -m kktapp.atol.emulator --host 127.0.0.1 --port "$EMULATOR_PORT" --control-port 0 \
  --state "$VAR/emulator-state.json" --log "$VAR/emulator-documents.jsonl" \
  >>"$VAR/emulator.out" 2>&1 &
EMU_PID=$!

# The emulator logs one "ready" line once both ports listen; it names the control port it got.
CONTROL_PORT=""
for _ in $(seq 100); do
  if ! kill -0 "$EMU_PID" 2>/dev/null; then
    echo "Эмулятор ККТ не запустился. Его вывод (var/emulator.out):" >&2
    tail -n 30 "$VAR/emulator.out" >&2
    exit 1
  fi
  CONTROL_PORT=$(sed -n 's/.*emulator ready, .*; control port \([0-9][0-9]*\);.*/\1/p' "$VAR/emulator.out" | tail -n 1)
  [ -n "$CONTROL_PORT" ] && break
  sleep 0.1
done
if [ -z "$CONTROL_PORT" ]; then
  echo "Эмулятор ККТ не открыл порт $EMULATOR_PORT за 10 секунд. Его вывод: var/emulator.out" >&2
  exit 1
fi

wait_port() {  # wait_port PID PORT OUTFILE: until the emulator listens, or explain why not
  for _ in $(seq 100); do
    if ! kill -0 "$1" 2>/dev/null; then
      echo "Эмулятор ККТ не запустился. Его вывод ($3):" >&2
      tail -n 30 "$3" >&2
      exit 1
    fi
    port_busy 127.0.0.1 "$2" && return 0
    sleep 0.1
  done
  echo "Эмулятор ККТ не открыл порт $2 за 10 секунд. Его вывод: $3" >&2
  exit 1
}
if [ "$SHTRIH" = 1 ]; then
  if port_busy 127.0.0.1 "$SHTRIH_PORT"; then
    echo "Порт эмулятора Штрих-М $SHTRIH_PORT уже занят; другой порт: make run SHTRIH=1 SHTRIH_PORT=..." >&2
    exit 1
  fi
  "$PY" -m kktapp.shtrih.emulator --host 127.0.0.1 --port "$SHTRIH_PORT" \
    --state "$VAR/shtrih-state.json" --log "$VAR/shtrih-documents.jsonl" >>"$VAR/shtrih.out" 2>&1 &
  SHTRIH_PID=$!
  wait_port "$SHTRIH_PID" "$SHTRIH_PORT" "$VAR/shtrih.out"
  export KKT_DEMO_SHTRIH_URL="socket://127.0.0.1:$SHTRIH_PORT"
  echo "  Касса № 2 — эмулятор Штрих-М (socket://127.0.0.1:$SHTRIH_PORT), документы: var/shtrih-documents.jsonl"
fi
echo "$CONTROL_PORT" >"$CONTROL_PORT_FILE"

URL="http://$HOST:$PORT"
cat <<EOF

  kkt — сервис фискализации чеков для касс АТОЛ (54-ФЗ): 1С, сайт или кассовая программа
  присылает чек по HTTP, сервис пробивает его на кассе и возвращает номер чека и фискальный признак.

  Сейчас это демонстрация без кассы: вместо АТОЛ 55Ф работает встроенный эмулятор
  (socket://127.0.0.1:$EMULATOR_PORT), он ведёт себя как настоящая касса, но ничего не печатает.

  Состояние ККТ (страница):   $URL/kkt
  Пробить чек, как это делает 1С (в другом окне терминала):
    curl -H 'Content-Type: application/x-www-form-urlencoded;charset=utf-8' \\
         --data-binary @deploy/demo-receipt.json $URL/kkt
  JSON API (логин demo, пароль demodemo):  $URL/api/v1/...   описание и проба: $URL/api/v1/docs
  Страница оператора (логин demo, пароль demodemo): $URL/operator
  Мониторинг:                 $URL/healthz и $URL/metrics
  Сбои эмулятора (в другом окне, из этого каталога):
    $PY -m kktapp.atol.emulator control paper out     # нет бумаги; paper in — вставили
    $PY -m kktapp.atol.emulator control power off     # касса выключена; power on — включена
    $PY -m kktapp.atol.emulator control help          # все команды

  Настройки демо:             deploy/demo-settings.py
  Журнал чеков:               var/journal.sqlite3
  Лог сервиса:                var/kkt.log
  Документы эмулятора:        var/emulator-documents.jsonl (по строке JSON на фискальный документ)
  Вывод эмулятора:            var/emulator.out (порт управления $CONTROL_PORT — в var/emulator-control.port)
  Остановить:                 Ctrl+C (эмулятор остановится вместе с сервисом)

EOF

export KKT_SETTINGS="$ROOT/deploy/demo-settings.py"
export KKT_DEMO_DEVICE_URL="socket://127.0.0.1:$EMULATOR_PORT"
# In the background and waited for, so that Ctrl+C or a SIGTERM to this script runs the trap
# at once; the trap then stops gunicorn and the emulator.
"$PY" -m gunicorn 'kktapp:create_app()' \
  --bind "$HOST:$PORT" --workers 2 --threads 8 --timeout 90 --graceful-timeout 10 \
  --access-logfile - --no-control-socket &
GUNICORN_PID=$!
STARTED=1
wait "$GUNICORN_PID" || { rc=$?; GUNICORN_PID=""; exit "$rc"; }
GUNICORN_PID=""
