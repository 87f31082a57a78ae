"""Shared harness for the benchmarks in bench/.

What every benchmark needs and nothing more:

* :class:`Harness` — a temp directory plus every process a benchmark starts (emulators, gunicorn),
  each in its own process group and tied to this process with PR_SET_PDEATHSIG, so that all of
  them stop on a normal exit, on an exception, on Ctrl-C, on SIGTERM and even when the benchmark
  itself is killed with SIGKILL.
* :meth:`Harness.start_emulators` — N ``python -m kktapp.atol.emulator`` processes, each binding port 0;
  :meth:`Harness.start_emulator_fleet` — N registers, several per process (bench/multi_emulator.py).
* :meth:`Harness.start_service` — gunicorn with a temporary KKT_SETTINGS file naming those devices.
* :func:`run_load` — a bounded closed-loop load generator (threads, one keep-alive
  ``http.client`` connection per client, stops at a request count or a deadline, whichever is first).
* :class:`CpuMeter` — CPU seconds of a process tree from /proc/<pid>/stat (the gunicorn master,
  its workers and anything they spawn, including workers that died and were reaped meanwhile).
* :func:`percentile`, :func:`result` (the ``name: value unit`` lines on stdout).

Progress and diagnostics go to stderr through ``logging``; stdout carries only the result lines.
Environment: BENCH_KEEP=1 keeps the temp directory (logs, journal, emulator document logs);
BENCH_GUNICORN_ARGS adds gunicorn options (e.g. ``-c hooks.py`` with profiling hooks);
BENCH_SERVER_VENV names the venv whose gunicorn runs the servers (service and floor app), e.g. one
made from Debian's ``/usr/bin/python3`` as the README's deployment is, where this checkout's
``.venv`` may come from another interpreter (here pyenv's: the service cost ~10 % more CPU under
it than under Debian's): the interpreter changes every figure, so each server start logs which
one it runs.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import datetime as dt
import http.client
import json
import logging
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
#: The venv's interpreter when there is one (``make`` creates it), else whoever runs us.
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
#: Where the servers' gunicorn and python are (BENCH_SERVER_VENV, see above).
SERVER_BIN = Path(os.environ["BENCH_SERVER_VENV"], "bin") if os.environ.get("BENCH_SERVER_VENV") \
    else Path(PYTHON).parent
GUNICORN = str(SERVER_BIN / "gunicorn")
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The scripts run as ``python bench/x.py``: make this checkout's kktapp importable for the
# few figures that talk to a device without the service (calibration).
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

from kktapp.atol.emulator.state import read_document_lines  # noqa: E402

log = logging.getLogger("bench")
#: The emulator's readiness line (logged once every port listens) and gunicorn's bind line.
EMULATOR_READY = re.compile(r"emulator ready, .* on [\d.]+:(\d+);")
#: gunicorn worker classes the harness runs, with the service's application for each.
SERVERS = {"gthread": "kktapp:create_app()", "asgi": "kktapp.asgi:application"}
GUNICORN_READY = re.compile(r"Listening at: http://[\d.]+:(\d+)")
#: bench/multi_emulator.py's readiness line: every register's port, in register order.
FLEET_READY = re.compile(r"multi-emulator ready: \d+ registers on [\d.]+ ports ([\d,]+)")
#: Its pace line (registers with a device time): cumulative PaceStats of its registers.
FLEET_PACE = re.compile(r"pace: monotonic=([\d.]+) tasks=(\d+) idle=([\d.]+) ends=(\d+) late=([\d.]+)")


def interpreter(python: str) -> str:
    """Which Python ``python`` is, for the log: its version and installation prefix."""
    probe = "import sys; print(sys.version.split()[0], sys.base_prefix, sep='|')"
    try:
        out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{python} ({exc})"
    version, _, prefix = out.strip().partition("|")
    return f"Python {version} from {prefix}"


def setup_logging(level: int = logging.INFO) -> None:
    """Progress lines to stderr; stdout is kept for the ``name: value unit`` figures."""
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")


def result(name: str, value: float | int, unit: str, digits: int = 1) -> None:
    """Print one figure as ``name: value unit`` on stdout (the line ``make bench`` collects)."""
    if isinstance(value, float):
        text = "nan" if math.isnan(value) else f"{value:.{digits}f}"
    else:
        text = str(value)
    sys.stdout.write(f"{name}: {text} {unit}\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) with linear interpolation between ranks (numpy's default)."""
    if not values:
        return math.nan
    if not 0 <= p <= 100:
        raise ValueError(f"percentile out of range: {p}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * p / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# --------------------------------------------------------------------------- /proc


def read_stat(pid: int, tid: int | None = None) -> tuple[int, int, int, float, float] | None:
    """(ppid, pgrp, session, own CPU s, reaped children's CPU s) of a process, None if it is gone;
    with ``tid``, own CPU is that one thread's.

    /proc/<pid>/stat: the command name in brackets may hold spaces, so split after the last ')'.
    Fields after it start at field 3 (state); utime, stime, cutime, cstime are fields 14–17. A
    thread's own figures are in /proc/<pid>/task/<tid>/stat: /proc/<tid>/stat, though it exists,
    reports the whole process.
    """
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = data[data.rindex(b")") + 2 :].split()
    ppid, pgrp, session = int(rest[1]), int(rest[2]), int(rest[3])
    utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
    return ppid, pgrp, session, (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


def all_pids() -> list[int]:
    """Every process id currently in /proc."""
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def descendants(root: int) -> list[int]:
    """The root process and all its live descendants."""
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        st = read_stat(pid)
        if st is not None:
            children.setdefault(st[0], []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


class CpuMeter:
    """CPU seconds (user + system) spent by process trees since :meth:`start`.

    Each snapshot sums, over every live process of the trees, its own CPU plus the CPU of its
    children that already exited and were reaped (cutime/cstime). A gunicorn worker that exits
    mid-run is thus still counted, through the master that reaped it.
    """

    def __init__(self, roots: Iterable[int]) -> None:
        self.roots = list(roots)
        self._start = 0.0

    def total(self) -> float:
        """CPU seconds of the trees so far (processes started before us included)."""
        total = 0.0
        for root in self.roots:
            for pid in descendants(root):
                st = read_stat(pid)
                if st is not None:
                    total += st[3] + st[4]
        return total

    def start(self) -> None:
        self._start = self.total()

    def elapsed(self) -> float:
        """CPU seconds since :meth:`start`."""
        return self.total() - self._start


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat, for a utilisation figure."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return float(total - idle), float(total)


def self_cpu() -> float:
    """CPU seconds of this benchmark process (the load generator's cost)."""
    t = os.times()
    return t.user + t.system


# --------------------------------------------------------------------------- processes


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM this child when the benchmark process dies, however it dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait_http(port: int, path: str, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> int:
    """Wait until an HTTP GET on path gets any answer; returns its status (a 404 counts as up)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before serving HTTP")
        conn = http.client.HTTPConnection(HOST, port, timeout=2)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no HTTP answer on {HOST}:{port}{path} after {timeout:.0f} s") from None
            time.sleep(0.1)
        finally:
            conn.close()


@dataclass
class Emulator:
    """One emulated cash register running as its own process."""

    number: int
    port: int
    proc: subprocess.Popen
    state: Path
    log: Path
    #: The output of the process it runs in, when that is a fleet (its pace lines).
    out: Path | None = None

    @property
    def url(self) -> str:
        return f"socket://{HOST}:{self.port}"

    def documents(self, doc_type: str | None = "receipt") -> list[dict]:
        """Fiscal documents from the emulator's JSON-lines log (all types when doc_type is None)."""
        return read_documents(self.log, doc_type)


@dataclass
class FleetPace:
    """What the fleet's registers measured of their pace in a window (see
    kktapp.atol.emulator.server.PaceStats), summed over the registers."""

    tasks: int = 0
    #: Register-seconds covered (the pace lines nearest the window's ends bound it).
    register_seconds: float = 0.0
    #: Register-seconds with nothing to run.
    idle: float = 0.0
    #: Tasks whose answer the host was waiting for, and the seconds those answers were late.
    ends: int = 0
    late: float = 0.0


def fleet_pace(emulators: Sequence[Emulator], start: float, end: float) -> FleetPace | None:
    """The fleet's pace between ``start`` and ``end`` (time.monotonic()): each process's last
    pace line at or before each end, subtracted; None without pace lines on both sides."""
    total, found = FleetPace(), False
    registers = collections.Counter(e.out for e in emulators if e.out is not None)
    for out in sorted(registers):
        marks = list(FLEET_PACE.finditer(out.read_text(encoding="utf-8", errors="replace")))
        before = [m for m in marks if float(m.group(1)) <= start]
        upto = [m for m in marks if float(m.group(1)) <= end]
        if not before or not upto or upto[-1] is before[-1]:
            continue
        a, b = before[-1], upto[-1]
        total.register_seconds += (float(b.group(1)) - float(a.group(1))) * registers[out]
        total.tasks += int(b.group(2)) - int(a.group(2))
        total.idle += float(b.group(3)) - float(a.group(3))
        total.ends += int(b.group(4)) - int(a.group(4))
        total.late += float(b.group(5)) - float(a.group(5))
        found = True
    return total if found else None


@dataclass
class Service:
    """The gunicorn-served kkt app."""

    port: int
    proc: subprocess.Popen
    settings: Path
    journal: Path
    log: Path
    workers: int
    threads: int


def read_documents(path: Path, doc_type: str | None = "receipt") -> list[dict]:
    """Parse an emulator document log; lines that are not complete JSON objects are skipped."""
    try:
        return [
            doc for doc in read_document_lines(path)
            if doc is not None and (doc_type is None or doc.get("type") == doc_type)
        ]
    except FileNotFoundError:
        return []


class Harness:
    """Temp directory and child processes of one benchmark; a context manager that cleans up.

    Every child gets its own session (so a whole tree — gunicorn master and workers — is killed
    with one killpg) and PR_SET_PDEATHSIG (so it dies with us even if we are SIGKILLed).
    """

    def __init__(self, name: str, keep: bool | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"kkt-{name}-"))
        self.keep = bool(os.environ.get("BENCH_KEEP")) if keep is None else keep
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []
        self._old_term = None

    # -- context management

    def __enter__(self) -> Harness:
        # SIGTERM (make killed, CI time-out) becomes SystemExit, so the finally blocks run.
        if threading.current_thread() is threading.main_thread():
            self._old_term = signal.signal(signal.SIGTERM, _raise_exit)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        try:
            if exc_type is not None and not issubclass(exc_type, KeyboardInterrupt | SystemExit):
                self.dump_logs()
            self.stop_all()
        finally:
            if self._old_term is not None:
                signal.signal(signal.SIGTERM, self._old_term)
            if self.keep or exc_type is not None and os.environ.get("BENCH_KEEP_ON_ERROR"):
                log.info("kept %s", self.dir)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)

    # -- processes

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a child in its own session; stdout and stderr go to <dir>/<name>.out."""
        out_path = self.dir / f"{name}.out"
        full_env = dict(os.environ)
        full_env.update(env or {})
        # The children import kktapp from this checkout whatever the current directory is.
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), full_env.get("PYTHONPATH", "")) if p)
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(
                list(argv),
                cwd=str(ROOT),
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.procs.append((name, proc, out_path))
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 10.0) -> None:
        """SIGTERM the child's process group, then SIGKILL it if it has not gone within timeout."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop on SIGTERM, killing", proc.args[:3])
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # Leftovers of the group (a worker whose master died first) are killed too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        """Stop every child, the most recently started first (the service before its devices)."""
        for _name, proc, _out in reversed(self.procs):
            try:
                self.stop(proc)
            except Exception:  # keep stopping the others
                log.exception("could not stop %s", proc.pid)
        self.procs.clear()

    def dump_logs(self, lines: int = 30) -> None:
        """Tail of each child's output to stderr, to see why a run failed."""
        for name, _proc, out in self.procs:
            with contextlib.suppress(OSError):
                tail = out.read_text(errors="replace").splitlines()[-lines:]
                if tail:
                    sys.stderr.write(f"--- {name} ({out}) ---\n" + "\n".join(tail) + "\n")

    # -- emulators

    def start_emulators(
        self, count: int, device_time_ms: float = 0, latency_ms: float = 0, extra: Sequence[str] = ()
    ) -> list[Emulator]:
        """Start ``count`` emulator processes, each binding a port of its own choosing (port 0),
        and wait until each reports it is ready; the port is read back from that line, so no
        other process can take it between a choice and a bind."""
        started = []
        for number in range(1, count + 1):
            # Files named by a sequence too: a harness may start more than one emulator number 1.
            tag = f"emu{number}-{len(self.procs)}"
            state = self.dir / f"{tag}.state.json"
            doc_log = self.dir / f"{tag}.docs.jsonl"
            argv = [
                PYTHON, "-m", "kktapp.atol.emulator",
                "--host", HOST, "--port", "0",
                "--state", str(state), "--log", str(doc_log),
                "--device-time", _num(device_time_ms), "--latency", _num(latency_ms),
                *extra,
            ]  # fmt: skip
            proc = self.start(tag, argv)
            started.append((number, tag, proc, state, doc_log))
        return [
            Emulator(number, self.port_from_output(tag, proc, EMULATOR_READY), proc, state, doc_log)
            for number, tag, proc, state, doc_log in started
        ]

    def start_emulator_fleet(
        self, count: int, per_process: int = 16, device_time_ms: float = 0, latency_ms: float = 0
    ) -> list[Emulator]:
        """``count`` emulated registers, ``per_process`` of them in each bench/multi_emulator.py
        process (numbers 1…count, each its own state file, document log, serial and port 0).

        Cheaper than :meth:`start_emulators` for dozens of registers: one interpreter per group.
        """
        groups = []
        for first in range(1, count + 1, max(1, per_process)):
            size = min(per_process, count - first + 1)
            name = f"fleet{first}-{len(self.procs)}"
            argv = [
                PYTHON, str(ROOT / "bench" / "multi_emulator.py"),
                "--count", str(size), "--first", str(first), "--dir", str(self.dir), "--prefix", f"{name}-emu",
                "--host", HOST, "--device-time", _num(device_time_ms), "--latency", _num(latency_ms),
            ]  # fmt: skip
            groups.append((first, name, self.start(name, argv)))
        fleet = []
        for first, name, proc in groups:
            ports = [int(p) for p in self.match_output(name, proc, FLEET_READY).group(1).split(",")]
            for offset, port in enumerate(ports):
                number = first + offset
                fleet.append(Emulator(number, port, proc, self.dir / f"{name}-emu{number}.state.json",
                                      self.dir / f"{name}-emu{number}.docs.jsonl",
                                      self.dir / f"{name}.out"))  # fmt: skip
        return fleet

    def port_from_output(self, name: str, proc: subprocess.Popen, pattern: re.Pattern[str],
                         timeout: float = 30.0) -> int:
        """Wait until the child's output matches ``pattern`` and return its first group as a port."""
        return int(self.match_output(name, proc, pattern, timeout).group(1))

    def match_output(self, name: str, proc: subprocess.Popen, pattern: re.Pattern[str],
                     timeout: float = 30.0) -> re.Match[str]:
        """Wait until the child's output matches ``pattern``; the match."""
        out_path = self.dir / f"{name}.out"
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                found = pattern.search(out_path.read_text(encoding="utf-8", errors="replace"))
                if found:
                    return found
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} before it was ready")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not ready after {timeout:.0f} s")
            time.sleep(0.05)

    # -- the service

    def write_settings(self, emulators: Sequence[Emulator], **overrides: object) -> Path:
        """A KKT_SETTINGS file: the devices, a temp journal, no auth for 127.0.0.1, a temp log."""
        settings = {
            "DEVICES": [{"number": e.number, "name": f"bench {e.number}", "url": e.url} for e in emulators],
            "DEVICE_URL": emulators[0].url if emulators else "socket://127.0.0.1:9",
            "JOURNAL_PATH": str(self.dir / "journal.sqlite3"),
            "AUTH_REQUIRED": False,
            "ONEC_ALLOWED_ADDRESSES": ["127.0.0.1", "::1"],
            "LOG_FILE": str(self.dir / "kkt.log"),
            "LOG_LEVEL": "INFO",
        }
        settings.update(overrides)
        path = self.dir / "site_settings.py"
        path.write_text(
            "# Written by bench/common.py for one benchmark run.\n"
            + "".join(f"{key} = {value!r}\n" for key, value in settings.items()),
            encoding="utf-8",
        )
        return path

    def start_service(
        self,
        emulators: Sequence[Emulator],
        workers: int = 2,
        threads: int = 16,
        app: str | None = None,
        ready_path: str = "/",
        extra_args: Sequence[str] = (),
        server: str = "gthread",
        **settings: object,
    ) -> Service:
        """gunicorn on a free port, KKT_SETTINGS pointing at a temp file.

        ``server``: ``gthread`` (threaded workers around the WSGI app, ``kktapp:create_app()``)
        or ``asgi`` (as deploy/kkt-gunicorn.service runs it: asyncio workers around
        ``kktapp.asgi:application``, ``threads`` request threads per process via KKT_THREADS).
        ``app`` overrides the application for that worker class.
        """
        if server not in SERVERS:
            raise ValueError(f"unknown server {server!r}: one of {', '.join(SERVERS)}")
        app = app or SERVERS[server]
        path = self.write_settings(emulators, **settings)
        log.info("%s (%s workers) runs under %s", app, server, interpreter(str(SERVER_BIN / "python")))
        argv = [
            GUNICORN, app,
            # Port 0: gunicorn binds a free port itself and names it in "Listening at".
            "--bind", f"{HOST}:0",
            "--workers", str(workers), "--threads", str(threads), "--worker-class", server,
            # A /kkt request waits for its device; the worker must not be killed meanwhile.
            "--timeout", "120", "--graceful-timeout", "5", "--keep-alive", "30",
            "--backlog", "1024",
            # gunicorn 23+ opens a control socket at a fixed path shared by every instance: not ours.
            "--no-control-socket",
            *extra_args,
            # For diagnosis: e.g. BENCH_GUNICORN_ARGS="-c /tmp/hooks.py" to profile the workers.
            *shlex.split(os.environ.get("BENCH_GUNICORN_ARGS", "")),
        ]  # fmt: skip
        name = f"gunicorn-{len(self.procs)}"
        proc = self.start(name, argv, env={"KKT_SETTINGS": str(path), "KKT_THREADS": str(threads)})
        port = self.port_from_output(name, proc, GUNICORN_READY)
        wait_http(port, ready_path, proc)
        return Service(port, proc, path, Path(str(settings.get("JOURNAL_PATH", self.dir / "journal.sqlite3"))),
                       self.dir / "kkt.log", workers, threads)  # fmt: skip


def _num(value: float) -> str:
    """A CLI number without a useless '.0'."""
    return str(int(value)) if float(value).is_integer() else str(value)


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------- requests


def doc_date(day: dt.date | None = None) -> str:
    """The 1C DocDate format, dd.mm.yyyy."""
    return (day or dt.date.today()).strftime("%d.%m.%Y")


def onec_receipt(doc_number: str, positions: int = 10, device: int | None = None, price: int = 195) -> dict:
    """A POST /kkt body as 1C sends it: ``positions`` goods at ``price`` roubles, VAT 22 %."""
    goods = {
        f"Position_{i}": {"Name": f"Товар {i}", "Price": price, "Quantity": 1, "Tax": 22, "PositionSumm": price}
        for i in range(1, positions + 1)
    }
    body: dict = {"DocNumber": doc_number, "DocDate": doc_date(), "DocSumm": price * positions, "Goods": goods}
    if device is not None:
        body["Device"] = device
    return body


def run_id() -> str:
    """A short prefix that makes idempotency keys unique per benchmark run."""
    return uuid.uuid4().hex[:8]


@dataclass
class Request:
    """What a client sends: one HTTP request and the idempotency key it carries."""

    method: str
    path: str
    body: bytes
    key: str
    headers: dict[str, str] = field(default_factory=dict)
    device: int | None = None


@dataclass
class Sample:
    """One request as the client saw it. Times are time.monotonic() seconds."""

    client: int
    seq: int
    key: str
    device: int | None
    start: float
    end: float
    status: int = 0
    body: dict | None = None
    error: str | None = None

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def ok(self) -> bool:
        """A 2xx answer whose JSON says nothing about an error (1C's result_code 0 when present)."""
        if self.error or not 200 <= self.status < 300 or self.body is None:
            return False
        code = self.body.get("result_code", self.body.get("ResultCode", 0))
        return code in (0, "0", None)


def onec_request(key: str, device: int | None = None, positions: int = 10) -> Request:
    """A POST /kkt request (the 1C contract) for one receipt on one device."""
    body = json.dumps(onec_receipt(key, positions, device), ensure_ascii=False).encode()
    # 1C really sends form-urlencoded; the service reads the raw body either way.
    return Request("POST", "/kkt", body, key, {"Content-Type": "application/json"}, device)


@dataclass
class LoadRun:
    """The outcome of :func:`run_load`: every sample plus the run's clock marks (monotonic s)."""

    samples: list[Sample]
    started: float
    deadline: float
    finished: float

    def window(self, start: float, end: float) -> list[Sample]:
        """Samples that completed within [start, end] (absolute monotonic times)."""
        return [s for s in self.samples if start <= s.end <= end]


def run_load(
    port: int,
    make_request: Callable[[int, int], Request],
    clients: int,
    *,
    max_requests: int,
    duration: float,
    timeout: float = 90.0,
    on_start: Callable[[float], None] | None = None,
    think: Callable[[int, int], float] | None = None,
) -> LoadRun:
    """Closed-loop load: ``clients`` threads, each with one keep-alive connection.

    A shared counter hands out sequence numbers 0, 1, 2, …; ``make_request(client, seq)`` builds
    the request. The run stops when ``max_requests`` were handed out or ``duration`` seconds passed
    (no new request starts after that; those in flight finish or hit ``timeout``). ``think``
    returns seconds a client sleeps before its n-th request (to stagger arrivals). ``on_start``
    gets the start time right before the clients are released.
    """
    lock = threading.Lock()
    counter = iter(range(max_requests))
    samples: list[Sample] = []
    start_gate = threading.Barrier(clients + 1)
    deadline = [0.0]

    def next_seq() -> int | None:
        with lock:
            if time.monotonic() >= deadline[0]:
                return None
            return next(counter, None)

    def client(index: int) -> None:
        conn: http.client.HTTPConnection | None = None
        local: list[Sample] = []
        start_gate.wait()
        while True:
            if think is not None:
                pause = think(index, len(local))
                if pause > 0:
                    time.sleep(pause)
            seq = next_seq()
            if seq is None:
                break
            req = make_request(index, seq)
            sample = Sample(index, seq, req.key, req.device, time.monotonic(), 0.0)
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
                conn.request(req.method, req.path, req.body, req.headers)
                resp = conn.getresponse()
                raw = resp.read()
                sample.status = resp.status
                try:
                    sample.body = json.loads(raw) if raw else None
                except ValueError:
                    sample.error = f"not JSON: {raw[:200]!r}"
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                sample.error = f"{type(exc).__name__}: {exc}"
                if conn is not None:
                    conn.close()
                conn = None
            sample.end = time.monotonic()
            local.append(sample)
        if conn is not None:
            conn.close()
        with lock:
            samples.extend(local)

    threads = [threading.Thread(target=client, args=(i,), name=f"client-{i}", daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    started = time.monotonic()
    deadline[0] = started + duration
    if on_start is not None:
        on_start(started)
    start_gate.wait()
    hard_stop = deadline[0] + timeout + 10
    for t in threads:
        t.join(max(0.0, hard_stop - time.monotonic()))
    stuck = sum(t.is_alive() for t in threads)
    if stuck:
        log.warning("%d client threads still waiting after the hard stop; their requests are not counted", stuck)
    with lock:
        done = sorted(samples, key=lambda s: s.start)
    return LoadRun(done, started, deadline[0], time.monotonic())


class Probe:
    """Readings of CPU meters, machine CPU and our own CPU at chosen moments of a run.

    ``arm(t0, offsets)`` starts a thread that takes one reading at each t0 + offset; a reading is
    a dict with ``time``, ``machine`` (busy, total jiffies), ``self`` and one entry per meter;
    with ``extra``, also ``extra``: what that callable returns at the same moment.
    """

    def __init__(self, meters: dict[str, CpuMeter], extra: Callable[[], object] | None = None) -> None:
        self.meters = meters
        self.extra = extra
        self.readings: list[dict] = []
        self._thread: threading.Thread | None = None

    def read(self) -> dict:
        reading = {name: meter.total() for name, meter in self.meters.items()}
        if self.extra is not None:
            reading["extra"] = self.extra()
        reading["machine"] = machine_cpu()
        reading["self"] = self_cpu()
        reading["time"] = time.monotonic()
        return reading

    def arm(self, t0: float, offsets: Sequence[float]) -> None:
        def run() -> None:
            for off in offsets:
                pause = t0 + off - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                self.readings.append(self.read())

        self._thread = threading.Thread(target=run, name="probe", daemon=True)
        self._thread.start()

    def join(self, timeout: float = 30.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def delta(self, name: str, first: int = 0, last: int = -1) -> float:
        """Difference of one quantity between two readings (seconds for CPU meters)."""
        a, b = self.readings[first], self.readings[last]
        if name == "machine":
            return (b["machine"][0] - a["machine"][0]) / max(1.0, b["machine"][1] - a["machine"][1])
        return b[name] - a[name]


def summarize_errors(samples: Iterable[Sample], limit: int = 5) -> str:
    """A few distinct failure descriptions, for the log when something went wrong."""
    seen: dict[str, int] = {}
    for s in samples:
        if s.ok:
            continue
        what = s.error or f"HTTP {s.status}: {json.dumps(s.body, ensure_ascii=False)[:300]}"
        seen[what] = seen.get(what, 0) + 1
    return "; ".join(f"{n}× {what}" for what, n in list(seen.items())[:limit])


def post_json(port: int, req: Request, timeout: float = 60.0) -> tuple[int, dict | None, bytes]:
    """One request on a fresh connection: (status, parsed JSON or None, raw body)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(req.method, req.path, req.body, req.headers)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return resp.status, body, raw


def warm_up(port: int, devices: Sequence[int | None], prefix: str, timeout: float = 60.0) -> None:
    """One receipt per device, devices in parallel: opens the links and the shifts before timing.

    A device whose link is not up yet answers 503 with the receipt kept in the queue; the same
    DocNumber is asked again (idempotent: never a second receipt) until it is done or timeout.
    """
    errors: list[str] = []
    deadline = time.monotonic() + timeout

    def one(device: int | None) -> None:
        req = onec_request(f"{prefix}-warm-{device}", device)
        last = ""
        while time.monotonic() < deadline:
            try:
                status, body, raw = post_json(port, req, max(1.0, deadline - time.monotonic()))
            except (OSError, http.client.HTTPException) as exc:
                status, body, raw = 0, None, str(exc).encode()
            if status == 200 and isinstance(body, dict) and body.get("result_code", 0) in (0, "0"):
                return
            if raw.decode(errors="replace") != last:
                last = raw.decode(errors="replace")
                log.warning("warm-up receipt on device %s: HTTP %s %s; asking again", device, status, last[:300])
            time.sleep(0.5)
        errors.append(f"device {device}: {last[:300]}")

    threads = [threading.Thread(target=one, args=(d,), daemon=True) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 5)
    if errors:
        raise RuntimeError("warm-up receipts failed: " + "; ".join(errors))


def service_log_summary(path: Path, limit: int = 5) -> None:
    """Count the service log's WARNING and ERROR lines and show a few, to explain bad figures."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return
    bad = [line for line in lines if " WARNING " in line or " ERROR " in line]
    if bad:
        log.warning("service log: %d warning/error lines, e.g.:\n  %s", len(bad), "\n  ".join(bad[:limit]))
