"""Where the service's CPU goes per receipt, layer by layer (validation, ATOL, journal, …).

The service runs in this process (``create_app``; its WSGI callable is called directly, no HTTP
server) in front of one emulated register with zero device time, and ``--receipts`` 10-position
1C receipts (``POST /kkt``) go through it one after another. ``--devices 64 --clients 128
--device-time 18`` profiles a fleet instead (registers from bench/multi_emulator.py, client i
posting to register i mod N). Two passes, each with an app of its own (own journal; same
registers, so the shifts stay open):

1. unprofiled: the process's CPU (all its threads: the request, the device owner, the rest)
   per receipt — the figure the layers add up to;
2. under cProfile, one profiler per thread timing thread CPU (``time.thread_time``): every
   function's own time is attributed to a layer, and each layer's share of the profiled total,
   times the unprofiled CPU per receipt, is its ``layer_<name>_ms_per_receipt``. Profiling
   inflates many small calls more than a few big ones, so the split is good to ±20 %.

Pass 1 also splits the process CPU by thread, with no profiler: ``threads_requests_…`` (the
client threads, which run the WSGI callable: the request's side), ``threads_owners_…`` (the
``kkt-device-N`` threads: the device owner with its driver) and ``threads_rest_…`` (everything
else). cProfile inflates call-heavy code (the ATOL packet loop, logging) more than C-heavy
code (SQLite, JSON), so this split is the check on the layer shares.

How a function's own time finds its layer (see :data:`CONTEXTS` and :func:`module_layer`):
functions named in CONTEXTS claim everything they call (the innermost such function wins); else a
function of a layer's modules is that layer; else library code (sqlite3, select, json …) belongs
to the kkt module that called it, through the call graph, in proportion to the time each caller
spent there (C functions are not profiled separately: their time is their caller's). Layers:

* ``validation`` — reading the body, schemas, fields, domain checks (the web's and the service's);
* ``atol`` — kktapp/atol/* and pyserial: encoding, framing, parsing, socket I/O calls;
* ``journal`` — kktapp/journal.py and the sqlite3 calls it makes (JSON of payloads included);
* ``waiting`` — the request waiting for its job and the owner's notification (threading);
* ``status`` — link/queue/snapshot bookkeeping (status snapshot reads and writes, queue counts);
* ``logging_json`` — logging, the fingerprint and answer JSON, the payload's JSON round trip;
* ``other`` — Flask/Werkzeug, the owner's and the service's own code, the rest.

Run: ``.venv/bin/python bench/bench_layers.py [--receipts 300]`` (``--no-profile``: the plain pass alone, for
``py-spy record -f raw -- .venv/bin/python bench/bench_layers.py --no-profile``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from common import Emulator, Harness, onec_request, read_stat, result, run_id, setup_logging
from werkzeug.test import run_wsgi_app

log = logging.getLogger("bench.layers")

LAYERS = ("validation", "atol", "journal", "waiting", "status", "logging_json", "other")

#: (file suffix, function name) → layer: the function and everything it calls count there.
#: Owner and service names from before and after the owner split; a name that no longer
#: exists simply matches nothing.
CONTEXTS: dict[tuple[str, str], str] = {
    **{("kktapp/web/kkt1c.py", n): "validation" for n in ("parse_receipt",)},
    **{("kktapp/web/common.py", n): "validation" for n in ("read_json", "parse_json", "check_tree")},
    **{("kktapp/domain.py", n): "validation" for n in ("check_receipt",)},
    **{("kktapp/device.py", n): "validation" for n in ("check",)},
    **{("kktapp/web/kkt1c.py", n): "status" for n in ("_link_known_down",)},
    **{("kktapp/service.py", n): "status" for n in ("snapshot", "link_down", "link_state")},
    **{("kktapp/journal.py", n): "status" for n in ("save_snapshot", "load_snapshot", "queue_counts", "unsettled",
                                                    "failed_with_code", "link_down")},
    **{(f, n): "status" for f in ("kktapp/owner.py", "kktapp/status.py", "kktapp/owner_status.py")
       for n in ("_publish_known", "_refresh", "_read_status", "_store_snapshot", "_refresh_due", "_settle",
                 "note_shift", "note_document", "publish_known", "refresh", "read_status", "store_snapshot")},
    **{("kktapp/service.py", n): "waiting" for n in ("_wait", "wait_for", "_job_changed")},
    **{(f, n): "waiting" for f in ("kktapp/owner.py", "kktapp/worker.py", "kktapp/waiting.py")
       for n in ("_notify", "wake", "notify", "_sleep")},
    **{("kktapp/service.py", n): "logging_json" for n in ("fingerprint", "_fingerprint")},
    **{("kktapp/journal.py", n): "logging_json" for n in ("receipt_to_json", "receipt_from_json")},
    **{("kktapp/web/kkt1c.py", n): "logging_json" for n in ("json_response", "_log_request")},
}

#: Path fragments of a layer's own modules (the function's own time, when no context claims it).
MODULES: tuple[tuple[str, str], ...] = (
    ("kktapp/atol/", "atol"),
    ("/serial/", "atol"),
    ("kktapp/journal.py", "journal"),
    ("kktapp/web/fields.py", "validation"),
    ("kktapp/web/schemas.py", "validation"),
    ("/marshmallow/", "validation"),
    ("/logging/", "logging_json"),
    ("kktapp/logsetup.py", "logging_json"),
    ("/threading.py", "waiting"),
)


def module_layer(filename: str) -> str | None:
    """The layer a function's own time belongs to by its file alone (None: not decided by file)."""
    for fragment, layer in MODULES:
        if fragment in filename:
            return layer
    return None


def is_json(filename: str, name: str) -> bool:
    """The json module, in Python or C (cProfile names C functions by their qualified name)."""
    return "/json/" in filename or name.startswith(("<built-in method _json.", "<method 'encode' of '_json."))


#: kkt modules every layer uses (fiscal rules, device helpers): their time is their caller's.
NEUTRAL = ("kktapp/domain.py", "kktapp/device.py")


def is_kkt(filename: str) -> bool:
    """A function of the service itself (kktapp), whose callees inherit its layer."""
    return "/kktapp/" in filename and not filename.endswith(NEUTRAL)


#: Whole modules that open a context (the owner split into kktapp/owner/: its status piece).
CONTEXT_MODULES = (("kktapp/owner/status.py", "status"),)
#: Parts of function names in the service and the owner's modules that wait or wake a waiter.
WAITING_NAMES = ("wait", "notify", "wake", "hand_over", "job_changed", "state_of")


def context_of(key: tuple[str, int, str]) -> str | None:
    """The context layer a function opens, or None."""
    filename, _line, name = key
    for (suffix, fname), layer in CONTEXTS.items():
        if name == fname and filename.endswith(suffix):
            return layer
    for suffix, layer in CONTEXT_MODULES:
        if filename.endswith(suffix):
            return layer
    if (filename.endswith(("kktapp/service.py", "kktapp/journal.py")) or "kktapp/owner/" in filename) and any(
        part in name for part in WAITING_NAMES
    ):
        return "waiting"
    return None


# --------------------------------------------------------------------------- profiling every thread

Key = tuple[str, int, str]


def code_key(code: Any) -> Key:
    """cProfile's entry code (a code object, or a string for C functions) → (file, line, name)."""
    if isinstance(code, str):
        return ("~", 0, code)
    return (code.co_filename, code.co_firstlineno, code.co_name)


class ThreadProfiles:
    """One cProfile per thread, started in every thread created after :meth:`install`.

    cProfile hooks the thread that enables it (PyEval_SetProfile); threading.setprofile runs our
    hook first thing in each new thread, where it replaces itself with a thread-CPU profiler.
    """

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _hook(self, frame: Any, event: str, arg: Any) -> None:
        sys.setprofile(None)
        self.start_here()

    def start_here(self) -> cProfile.Profile:
        """Profile the calling thread from now on."""
        # builtins=False: a C function's time (sqlite3, json's scanner, socket calls, isinstance)
        # is its Python caller's. Profiling every builtin call would inflate loop-heavy code
        # several times over and leave sqlite3 time without a layer.
        prof = cProfile.Profile(time.thread_time, builtins=False)
        with self._lock:
            self.profiles.append(prof)
        prof.enable()
        return prof

    def install(self) -> None:
        threading.setprofile(self._hook)

    def uninstall(self) -> None:
        threading.setprofile(None)  # type: ignore[arg-type]

    def snapshot(self) -> dict[tuple[int, Key], tuple[float, dict[Key, tuple[float, float, int]]]]:
        """Own time and callee edges (inline time, total time, calls) of every function, per thread.

        getstats() does not stop a profiler; a function still running (a thread's outer loop)
        shows only what it finished, which is why two snapshots are subtracted.
        """
        out: dict[tuple[int, Key], tuple[float, dict[Key, tuple[float, float, int]]]] = {}
        with self._lock:
            profiles = list(self.profiles)
        for index, prof in enumerate(profiles):
            for entry in prof.getstats():
                calls = entry.calls or ()
                edges = {code_key(sub.code): (sub.inlinetime, sub.totaltime, sub.callcount) for sub in calls}
                out[(index, code_key(entry.code))] = (entry.inlinetime, edges)
        return out


def difference(before: dict, after: dict) -> tuple[dict[Key, float], dict[tuple[Key, Key], tuple[float, float, int]]]:
    """Own time per function and (caller, callee) edges accumulated between two snapshots."""
    own: dict[Key, float] = defaultdict(float)
    edges: dict[tuple[Key, Key], list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for tk, (inline, calls) in after.items():
        old_inline, old_calls = before.get(tk, (0.0, {}))
        key = tk[1]
        own[key] += inline - old_inline
        for callee, (i, t, n) in calls.items():
            oi, ot, on = old_calls.get(callee, (0.0, 0.0, 0))
            e = edges[(key, callee)]
            e[0] += i - oi
            e[1] += t - ot
            e[2] += n - on
    return dict(own), {k: (v[0], v[1], int(v[2])) for k, v in edges.items()}


# --------------------------------------------------------------------------- attribution


def attribute(own: dict[Key, float], edges: dict[tuple[Key, Key], tuple[float, float, int]]) -> dict[str, float]:
    """Seconds of own time per layer (see the module docstring for the rules)."""
    parents: dict[Key, list[tuple[Key, float, float, int]]] = defaultdict(list)
    for (caller, callee), (inline, total, calls) in edges.items():
        parents[callee].append((caller, inline, total, calls))

    # A function's "state" when it runs: (context opened above it, layer of the nearest kkt
    # function above it). Distributions over states, weighted by the time each caller gave it.
    State = tuple[str | None, str | None]
    memo: dict[Key, dict[State, float]] = {}
    busy: set[Key] = set()

    def passes_on(key: Key, state: State) -> State:
        ctx, mod = state
        filename = key[0]
        ctx = context_of(key) or ctx
        if is_kkt(filename):
            mod = module_layer(filename)
        return ctx, mod

    def states(key: Key, use_inline: bool) -> dict[State, float]:
        """Where calls of ``key`` come from: weights by the callers' share of its time."""
        cache_key = key if not use_inline else (key[0], key[1], key[2] + "\0own")
        if cache_key in memo:
            return memo[cache_key]
        if key in busy:  # recursion: count it as called from the top
            return {(None, None): 1.0}
        busy.add(key)
        try:
            dist: dict[State, float] = defaultdict(float)
            callers = parents.get(key, [])
            weights = [(inline if use_inline else total) for _c, inline, total, _n in callers]
            if not callers or sum(w for w in weights if w > 0) <= 0:
                weights = [float(n) for _c, _i, _t, n in callers]
            norm = sum(w for w in weights if w > 0)
            if norm <= 0:
                dist[(None, None)] = 1.0
            else:
                for (caller, *_rest), w in zip(callers, weights, strict=True):
                    if w <= 0:
                        continue
                    for st, p in states(caller, False).items():
                        dist[passes_on(caller, st)] += p * w / norm
            memo[cache_key] = dict(dist)
            return memo[cache_key]
        finally:
            busy.discard(key)

    layers: dict[str, float] = defaultdict(float)
    for key, seconds in own.items():
        if seconds <= 0:
            continue
        for (ctx, mod), p in states(key, True).items():
            layers[own_layer(key, ctx, mod)] += seconds * p
    return dict(layers)


def own_layer(key: Key, ctx: str | None, mod: str | None) -> str:
    """The layer of a function's own time, given the context and kkt module it runs under."""
    filename, _line, name = key
    if filename == __file__ or filename.endswith("/werkzeug/test.py"):
        return "harness"  # the clients' own loop: not the service's CPU, dropped from the shares
    ctx = context_of(key) or ctx
    if ctx is not None:
        return ctx
    if is_json(filename, name):
        return mod if mod == "journal" else "logging_json"
    own = module_layer(filename)
    if own is not None:
        return own
    if is_kkt(filename):
        return "other"
    return mod or "other"


# --------------------------------------------------------------------------- the run


def post_wsgi(wsgi: Callable, body: bytes) -> tuple[str, bytes]:
    """One POST /kkt (1C's form content type) through a WSGI callable, as a server would call it."""
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/kkt", "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
        "wsgi.run_once": False, "wsgi.version": (1, 0),
    }  # fmt: skip
    chunks, status, _headers = run_wsgi_app(wsgi, environ, buffered=True)
    return status, b"".join(chunks)


class InProcess:
    """The kkt app built in this process against given devices; posts 1C receipts to its WSGI callable."""

    def __init__(self, h: Harness, fleet: list[Emulator], tag: str) -> None:
        from kktapp import create_app

        self.log_file = str(h.dir / f"kkt-{tag}.log")
        self.app = create_app({
            "DEVICE_URL": fleet[0].url,
            "DEVICES": [{"number": e.number, "name": f"bench {e.number}", "url": e.url} for e in fleet],
            "JOURNAL_PATH": str(h.dir / f"journal-{tag}.sqlite3"),
            "LOG_FILE": self.log_file,
            "LOG_LEVEL": "INFO",
            "AUTH_REQUIRED": False,
            "ONEC_ALLOWED_ADDRESSES": ["127.0.0.1", "::1"],
            "KKT_WAIT_TIMEOUT": 30,
        })
        self.wsgi = self.app.wsgi_app

    def post(self, body: bytes) -> tuple[str, bytes]:
        """One POST /kkt through the WSGI callable, as a server would call it."""
        return post_wsgi(self.wsgi, body)

    def close(self) -> None:
        service = self.app.extensions["kkt"]
        service.stop()
        service.journal.close()
        pkg = logging.getLogger("kktapp")
        for handler in list(pkg.handlers):
            if getattr(handler, "baseFilename", None) == self.log_file:
                pkg.removeHandler(handler)
                handler.close()


def post_all(app: InProcess, bodies: list[bytes], clients: int, devices: list[int]) -> float:
    """Post every body from ``clients`` threads at once (closed loop); client i posts to device i mod N.

    Returns the CPU seconds of the client threads: each runs the app's WSGI callable, so this
    is the requests' side (HTTP parsing aside) of the service's CPU.
    """
    lock = threading.Lock()
    request_cpu = [0.0]
    todo = iter(bodies)
    errors: list[str] = []

    def client(index: int) -> None:
        device = devices[index % len(devices)]
        start = time.thread_time()
        try:
            while True:
                with lock:
                    body = next(todo, None)
                if body is None or errors:
                    return
                status, data = app.post(body.replace(b'"Device": 0', f'"Device": {device}'.encode()))
                if not status.startswith("200"):
                    errors.append(f"receipt refused: {status} {data[:300]!r}")
        finally:
            with lock:
                request_cpu[0] += time.thread_time() - start

    threads = [threading.Thread(target=client, args=(i,), name=f"client-{i}") for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(errors[0])
    return request_cpu[0]


def owner_threads_cpu() -> float:
    """CPU seconds so far of this process's device-owner threads (``kkt-device-N``), from /proc."""
    pid = os.getpid()
    total = 0.0
    for thread in threading.enumerate():
        if thread.name.startswith("kkt-device-") and thread.native_id is not None:
            stat = read_stat(pid, thread.native_id)
            if stat is not None:
                total += stat[3]
    return total


def bodies(prefix: str, count: int) -> list[bytes]:
    """1C receipts; ``"Device": 0`` is replaced by each client's device."""
    return [onec_request(f"{prefix}-{i}", 0).body for i in range(count)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receipts", type=int, default=300, help="receipts per pass")
    parser.add_argument("--warm-up", type=int, default=5, help="receipts before each pass, not counted")
    parser.add_argument("--top", type=int, default=0, help="also log the N functions with the most own time")
    parser.add_argument("--devices", type=int, default=1, help="emulated registers (16 to a process)")
    parser.add_argument("--clients", type=int, default=1, help="concurrent clients (client i posts to device i mod N)")
    parser.add_argument("--no-profile", action="store_true",
                        help="the plain pass only (for a sampling profiler from outside, e.g. py-spy)")
    parser.add_argument("--device-time", type=float, default=0.0, metavar="MS", help="emulator time per task")
    args = parser.parse_args(argv)
    setup_logging()
    prefix = run_id()
    n = args.receipts
    with Harness("layers") as h:
        fleet = h.start_emulator_fleet(args.devices, device_time_ms=args.device_time)
        devices = [e.number for e in fleet]
        warm = max(args.warm_up, len(devices))

        split: dict[str, float] = {}

        def run(tag: str, profiles: ThreadProfiles | None) -> tuple[float, dict, dict]:
            app = InProcess(h, fleet, tag)
            try:
                post_all(app, bodies(f"{prefix}-{tag}-warm", warm), min(args.clients, len(devices)), devices)
                before = profiles.snapshot() if profiles else {}
                owners0 = owner_threads_cpu()
                t0 = time.process_time()
                requests = post_all(app, bodies(f"{prefix}-{tag}", n), args.clients, devices)
                cpu = time.process_time() - t0
                owners = owner_threads_cpu() - owners0
                after = profiles.snapshot() if profiles else {}
            finally:
                app.close()
            if profiles is None:
                split.update(requests=requests, owners=owners, rest=cpu - requests - owners)
            return cpu, before, after

        # Pass 1: plain CPU of the process per receipt.
        cpu, _, _ = run("plain", None)
        cpu_ms = cpu * 1000 / n
        own: dict[Key, float] = {}
        layers: dict[str, float] = {}
        if not args.no_profile:
            # Pass 2: the same under per-thread profilers (every thread the app and the clients start).
            profiles = ThreadProfiles()
            profiles.install()
            try:
                _cpu, before, after = run("profiled", profiles)
            finally:
                profiles.uninstall()
            own, edges = difference(before, after)
            layers = attribute(own, edges)
            layers.pop("harness", None)

    profiled_total = sum(layers.values())
    result("cpu_ms_per_receipt_in_process", cpu_ms, "ms", 2)
    # Without a profiler, by thread: no call-count inflation, so a check on the layer shares.
    for name, seconds in split.items():
        result(f"threads_{name}_cpu_ms_per_receipt", seconds * 1000 / n, "ms", 2)
    if args.no_profile:
        return 0
    result("profiled_cpu_ms_per_receipt", profiled_total * 1000 / n, "ms", 2)
    for name in LAYERS:
        share = layers.get(name, 0.0) / profiled_total if profiled_total else float("nan")
        result(f"layer_{name}_ms_per_receipt", share * cpu_ms, "ms", 2)
    if args.top:
        top = sorted(own.items(), key=lambda kv: -kv[1])[: args.top]
        log.info("own time, top %d (profiled ms per receipt):\n%s", args.top, "\n".join(
            f"  {s * 1000 / n:7.3f}  {k[2]}  {k[0]}:{k[1]}" for k, s in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
