"""Service cost: receipts/s and CPU ms per 10-position receipt, end to end, with zero device time.

For 1, 4 and 16 emulated devices (separate processes, ``--device-time 0 --latency 0``) the
service runs under gunicorn and closed-loop clients post 10-position receipts to ``POST /kkt``
(the 1C contract, ``Device`` picks the register) — HTTP → validation → journal → device queue →
ATOL protocol → answer. Clients are spread evenly over the devices, several per device, so
every device queue stays non-empty and the machine, not the clients, is the limit.

Figures (one ``name: value unit`` line each):

* ``service_rps_N_devices`` — answered receipts per second in the measuring window;
* ``service_cpu_ms_per_receipt_N_devices`` — CPU of the gunicorn master and workers (user +
  system, from /proc) in the window divided by the receipts answered in it;
* ``service_rps_per_core_N_devices`` — 1000 / the above: what one core fully given to the
  service would do (an estimate; device I/O of one device stays in one process, GIL-bound);
* ``latency_p50_N_devices`` / ``latency_p99_N_devices`` — client-side request latency;
* context: the emulators' and the load generator's CPU per receipt and the machine's utilisation
  (all of them share the same 2 cores, so rps is a lower bound of what the service alone does);
* ``request_side_cpu_ms_per_request_1_devices`` — with two or more workers, only one holds the
  register's link; the CPU of the others divided by the 1C requests they answered is what the
  request side alone costs (HTTP, validation, the journal row, waiting for the owner's wake-up);
  ``device_side_cpu_ms_per_receipt_1_devices`` is the rest of the service's CPU per receipt (the
  owner's process, less its own requests at the same rate: an estimate), and
  ``requests_outside_the_owner_1_devices`` the share of requests the others answered;
* ``floor_cpu_ms_per_request`` — the same measurement, same gunicorn options, clients and window
  as the 1-device run, of bench/floor_app.py: Flask parsing the same JSON and writing one row to
  SQLite (WAL, synchronous=FULL) — the least any service answering this request durably costs;
* ``cpu_ratio_to_floor`` — service_cpu_ms_per_receipt_1_devices ÷ floor_cpu_ms_per_request
  (issue 15's targets: ≤ 2.0 ms and ≤ 3.0).

The floor runs beside the smallest configuration, both servers up at once, in ``--rounds``
(3) alternating windows: service, floor, service, floor … This host's speed drifts by tens of
percent within minutes, so one window of each, minutes apart, gave ratios that did not repeat.
That configuration's figures are the medians over its rounds, and the ratio is the median of
the rounds' own ratios (each round's pair measured back to back); the rounds are logged.

``--server asgi`` runs both the service and the floor as deploy/kkt-gunicorn.service runs the
service: gunicorn's asyncio workers, each request read whole by the event loop and then run in
one of ``--threads`` threads (kktapp/asgi.py); the default is gthread, as in every earlier figure.

Run: ``.venv/bin/python bench/bench_service.py`` (``make bench`` runs every bench/bench_*.py).
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import (
    CpuMeter,
    Emulator,
    Harness,
    LoadRun,
    Probe,
    Request,
    Sample,
    descendants,
    onec_request,
    percentile,
    post_json,
    read_stat,
    result,
    run_id,
    run_load,
    service_log_summary,
    setup_logging,
    summarize_errors,
    warm_up,
)

log = logging.getLogger("bench.service")
#: gunicorn's app spec of the floor per worker class (bench/ is importable as a namespace
#: package from the checkout).
FLOOR_APPS = {"gthread": "bench.floor_app:create_app()", "asgi": "bench.floor_app:asgi_app()"}


def measure_window(port: int, meters: dict[str, CpuMeter], make_request: Callable[[int, int], Request], clients: int,
                   args: argparse.Namespace, extra: Callable[[], object] | None = None,
                   ) -> tuple[Probe, LoadRun, list[Sample], list[Sample], float]:
    """Closed-loop load on one server: (probe, run, ok samples in the window, failed samples, window span)."""
    probe = Probe(meters, extra)
    window = (args.ramp, args.duration)
    run = run_load(
        port,
        make_request,
        clients,
        max_requests=args.max_requests,
        duration=args.duration,
        timeout=args.timeout,
        on_start=lambda t0: probe.arm(t0, window),
    )
    probe.join()
    if len(probe.readings) < 2:
        raise RuntimeError("CPU probe did not take its readings")
    t_from, t_to = run.started + window[0], probe.readings[1]["time"]
    ok = [s for s in run.window(t_from, t_to) if s.ok]
    failed = [s for s in run.samples if not s.ok]
    return probe, run, ok, failed, t_to - t_from


@dataclass
class Target:
    """A running server under measurement: its port, what each request posts (given the window's
    own prefix, the client and the request's number), its CPU meters."""

    port: int
    make_request: Callable[[str, int, int], Request]
    meters: dict[str, CpuMeter]
    #: The server's log, summarised after the run (the service's only).
    log_path: Path | None = None
    #: The service with one register: where its CPU goes, process by process (see ProcessSplit).
    split: ProcessSplit | None = None


@dataclass
class ProcessSplit:
    """The request side and the device side of the service's CPU, told apart by process.

    Only one gunicorn worker holds a register's link; a request that lands in another worker
    costs that worker the request side alone (HTTP, validation, journal, waiting for the owner's
    wake-up), and the device side (the owner's queue, the protocol, the journal rows after
    sending) is paid in the owner's process. Each reading gives every worker's CPU and the 1C
    requests it logged; the owner is the pid in the register's election lock file.
    """

    master: int
    log_path: Path
    lock_path: Path

    def read_counts(self) -> dict[int, int]:
        """Per pid: the 1C requests it has logged so far (answered or refused)."""
        counts: dict[int, int] = {}
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
        for pid in _REQUEST_LINE.findall(text):
            counts[int(pid)] = counts.get(int(pid), 0) + 1
        return counts

    def read(self) -> dict[int, tuple[float, int]]:
        """Per worker pid: (CPU seconds, 1C requests logged so far)."""
        counts = self.read_counts()
        workers = {}
        for pid in descendants(self.master):
            st = read_stat(pid)
            if pid != self.master and st is not None:
                workers[pid] = (st[3], counts.get(pid, 0))
        return workers

    def owner(self) -> int | None:
        try:
            return int(self.lock_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def figures(self, probe: Probe, receipts: int) -> dict[str, float]:
        """``request_side_ms``: CPU per request of the workers without the link; ``device_side_ms``:
        the rest of the service's CPU per receipt (the owner's process less its own requests at
        that rate). Empty when no request landed outside the owner."""
        first, last = probe.readings[0]["extra"], probe.readings[-1]["extra"]
        owner = self.owner()
        cpu = requests = 0.0
        for pid, (cpu_after, requests_after) in last.items():
            if pid != owner and pid in first:
                cpu += cpu_after - first[pid][0]
                requests += requests_after - first[pid][1]
        if not requests or owner not in last or owner not in first:
            return {}
        request_side = cpu / requests
        owner_cpu = last[owner][0] - first[owner][0]
        owner_requests = last[owner][1] - first[owner][1]
        return {"request_side_ms": request_side * 1000,
                "device_side_ms": (owner_cpu - owner_requests * request_side) * 1000 / max(1, receipts),
                "requests_elsewhere": requests / max(1, requests + owner_requests)}


#: The 1C view's line for each answered request; the format puts the process id after the time.
_REQUEST_LINE = re.compile(r"^\S+ \S+ (\d+) \w+ kktapp\.web\.kkt1c: 1С: ", re.MULTILINE)


def window_figures(target: Target, clients: int, args: argparse.Namespace) -> tuple[dict[str, float], LoadRun]:
    """One measuring window of closed-loop load on ``target``: its figures by name, and the run."""
    # A prefix of its own per window: a document number seen before is answered from the journal
    # as a repeat, without the device (cheaper, and not what is measured).
    prefix = run_id()
    probe, run, ok, failed, span = measure_window(
        target.port, target.meters, lambda client, seq: target.make_request(prefix, client, seq), clients, args,
        target.split.read if target.split is not None else None)
    n = max(1, len(ok))
    latencies = [s.latency * 1000 for s in ok]
    figures = {
        "rps": len(ok) / span,
        "cpu_ms": probe.delta("service") * 1000 / n,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "client_cpu_ms": probe.delta("self") * 1000 / n,
        "machine": probe.delta("machine"),
        "failed": len(failed),
    }
    if "emulators" in target.meters:
        figures["emulator_cpu_ms"] = probe.delta("emulators") * 1000 / n
    if target.split is not None:
        figures.update(target.split.figures(probe, n))
    if failed:
        log.error("%d of %d requests failed: %s", len(failed), len(run.samples), summarize_errors(failed))
    return figures, run


def ratio(ours: float, floor: float) -> float:
    """Service cost over floor cost; nan when the floor measured nothing."""
    return ours / floor if floor > 0 else float("nan")


def typical(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds (failures: their sum)."""
    # A figure some round could not give (the process split, when every request landed in the
    # owner's worker) is left out rather than taken from fewer rounds.
    return {name: (sum(r[name] for r in rounds) if name == "failed" else statistics.median(r[name] for r in rounds))
            for name in rounds[0] if all(name in r for r in rounds)}


def start_service(h: Harness, devices: int, args: argparse.Namespace) -> tuple[Target, list[Emulator], int]:
    """Emulators and the service in ``h``, warmed up: (target, emulators, clients)."""
    clients = max(args.min_clients, args.clients_per_device * devices)
    prefix = run_id()
    emulators = h.start_emulators(devices, device_time_ms=0, latency_ms=0)
    service = h.start_service(emulators, workers=args.workers, threads=args.threads, server=args.server)
    numbers = [e.number for e in emulators]
    warm_up(service.port, numbers, prefix)
    meters = {"service": CpuMeter([service.proc.pid]), "emulators": CpuMeter([e.proc.pid for e in emulators])}
    # One register: one owner, so the workers without it show the request side alone.
    split = ProcessSplit(service.proc.pid, service.log, Path(f"{service.journal}.device-{numbers[0]}.lock")) \
        if devices == 1 and args.workers > 1 else None
    target = Target(service.port, lambda run, client, seq: onec_request(f"{run}-{seq}", numbers[client % devices]),
                    meters, service.log, split)
    return target, emulators, clients


def start_floor(h: Harness, args: argparse.Namespace) -> Target:
    """The floor app (bench/floor_app.py) under the same gunicorn options, warmed up."""
    prefix = run_id()
    server = h.start_service([], workers=args.workers, threads=args.threads, server=args.server,
                             app=FLOOR_APPS[args.server],
                             JOURNAL_PATH=str(h.dir / "floor.sqlite3"))
    for i in range(20):  # both workers open their database before the window
        status, _body, raw = post_json(server.port, onec_request(f"{prefix}-warm-{i}"))
        if status != 200:
            raise RuntimeError(f"floor app answered {status}: {raw[:300]!r}")
    return Target(server.port, lambda run, client, seq: onec_request(f"{run}-{seq}"),
                  {"service": CpuMeter([server.proc.pid])})


def report_service(devices: int, clients: int, figures: dict[str, float], documents: int, answered: int) -> None:
    """Print one configuration's figures."""
    suffix = f"{devices}_devices"
    result(f"service_rps_{suffix}", figures["rps"], "receipts/s")
    result(f"service_cpu_ms_per_receipt_{suffix}", figures["cpu_ms"], "ms", 2)
    result(f"service_rps_per_core_{suffix}", 1000 / figures["cpu_ms"], "receipts/s")
    result(f"latency_p50_{suffix}", figures["p50"], "ms")
    result(f"latency_p99_{suffix}", figures["p99"], "ms")
    result(f"emulator_cpu_ms_per_receipt_{suffix}", figures["emulator_cpu_ms"], "ms")
    result(f"client_cpu_ms_per_receipt_{suffix}", figures["client_cpu_ms"], "ms")
    result(f"machine_cpu_busy_{suffix}", figures["machine"], "fraction", digits=2)
    result(f"clients_{suffix}", clients, "clients")
    result(f"failed_requests_{suffix}", int(figures["failed"]), "requests")
    if "request_side_ms" in figures:
        result(f"request_side_cpu_ms_per_request_{suffix}", figures["request_side_ms"], "ms", 2)
        result(f"device_side_cpu_ms_per_receipt_{suffix}", figures["device_side_ms"], "ms", 2)
        result(f"requests_outside_the_owner_{suffix}", figures["requests_elsewhere"], "fraction", digits=2)
    result(f"documents_vs_answers_{suffix}", documents - answered, "receipts")
    if documents != answered:
        log.error("the emulators logged %d receipts for %d successful answers", documents, answered)


def measure(devices: int, args: argparse.Namespace, floor: bool) -> bool:
    """One configuration (with the floor app, in alternating rounds, when ``floor``); prints its
    figures, returns whether no request failed and every answer is a document."""
    rounds = args.rounds if floor else 1
    with Harness(f"service{devices}") as h:
        service, emulators, clients = start_service(h, devices, args)
        floor_target = start_floor(h, args) if floor else None
        ours: list[dict[str, float]] = []
        theirs: list[dict[str, float]] = []
        floor_failed = 0
        answered = devices  # the warm-up receipts
        for r in range(rounds):
            # Side by side: the host's speed drifts by tens of percent within minutes, so the
            # ratio is taken per round, from a window of each server run one after the other.
            figures, run = window_figures(service, clients, args)
            answered += sum(1 for s in run.samples if s.ok)
            ours.append(figures)
            if floor_target is not None:
                theirs.append(window_figures(floor_target, max(args.min_clients, args.clients_per_device), args)[0])
                log.info("round %d of %d: service %.2f ms, floor %.2f ms per request, ratio %.2f", r + 1, rounds,
                         figures["cpu_ms"], theirs[-1]["cpu_ms"], ratio(figures["cpu_ms"], theirs[-1]["cpu_ms"]))
        documents = sum(len(e.documents()) for e in emulators)
        mine = typical(ours)
        report_service(devices, clients, mine, documents, answered)
        if service.log_path is not None:
            service_log_summary(service.log_path)
        if floor_target is not None:
            base = typical(theirs)
            result("floor_rps", base["rps"], "requests/s")
            result("floor_cpu_ms_per_request", base["cpu_ms"], "ms", 2)
            floor_failed = int(base["failed"])
            result("floor_failed_requests", floor_failed, "requests")
            result("cpu_ratio_to_floor", statistics.median(
                ratio(o["cpu_ms"], t["cpu_ms"]) for o, t in zip(ours, theirs, strict=True)), "×", 2)
            result(f"rounds_{devices}_devices", rounds, "rounds")
        return not mine["failed"] and not floor_failed and documents == answered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 4, 16], help="device counts to measure")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of load per configuration")
    parser.add_argument("--ramp", type=float, default=1.0, help="seconds at the start not measured")
    parser.add_argument("--clients-per-device", type=int, default=2)
    parser.add_argument("--min-clients", type=int, default=8)
    parser.add_argument("--max-requests", type=int, default=20000, help="upper bound of requests per configuration")
    parser.add_argument("--timeout", type=float, default=30.0, help="client timeout per request, seconds")
    # 2 workers for 2 cores: each Python process runs on at most one core (GIL), and the
    # emulators and the load generator need CPU too, so more processes only add contention.
    # Threads: a /kkt request holds its thread while it waits for the device, and the kernel may
    # hand most connections to one worker, so each worker gets at least as many threads as there
    # are clients (fewer: requests wait inside gunicorn before they are journaled, see fairness).
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--no-floor", action="store_true", help="skip the floor app (bench/floor_app.py)")
    # gthread: the figures every earlier closing note compares with; asgi: the worker class the
    # systemd unit runs (the event loop reads each request whole before a thread runs it).
    parser.add_argument("--server", choices=sorted(FLOOR_APPS), default="gthread",
                        help="gunicorn worker class of the service and the floor (default gthread)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating windows of the service and the floor app (medians are printed)")
    args = parser.parse_args(argv)
    setup_logging()
    good = True
    # The floor is measured beside the smallest configuration (the ratio's, 1 device by default).
    base = None if args.no_floor else min(args.devices)
    for devices in args.devices:
        log.info("%d device(s): %d %s workers × %d threads%s", devices, args.workers, args.server, args.threads,
                 f", beside the floor app in {args.rounds} rounds" if devices == base else "")
        good = measure(devices, args, floor=devices == base) and good
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
