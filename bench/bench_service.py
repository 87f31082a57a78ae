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
* ``floor_cpu_ms_per_request`` — the same measurement, same gunicorn options, clients and window
  as the 1-device run, of bench/floor_app.py: Flask parsing the same JSON and writing one row to
  SQLite (WAL, synchronous=FULL) — the least any service answering this request durably costs;
* ``cpu_ratio_to_floor`` — service_cpu_ms_per_receipt_1_devices ÷ floor_cpu_ms_per_request
  (issue 15's targets: ≤ 2.0 ms and ≤ 3.0).

Run: ``.venv/bin/python bench/bench_service.py`` (``make bench`` runs every bench/bench_*.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from common import (
    CpuMeter,
    Harness,
    LoadRun,
    Probe,
    Request,
    Sample,
    onec_request,
    percentile,
    post_json,
    result,
    run_id,
    run_load,
    service_log_summary,
    setup_logging,
    summarize_errors,
    warm_up,
)

log = logging.getLogger("bench.service")
#: gunicorn's app spec of the floor (bench/ is importable as a namespace package from the checkout).
FLOOR_APP = "bench.floor_app:create_app()"


def measure_window(port: int, meters: dict[str, CpuMeter], make_request: Callable[[int, int], Request], clients: int,
                   args: argparse.Namespace) -> tuple[Probe, LoadRun, list[Sample], list[Sample], float]:
    """Closed-loop load on one server: (probe, run, ok samples in the window, failed samples, window span)."""
    probe = Probe(meters)
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


def measure(devices: int, args: argparse.Namespace) -> tuple[bool, float]:
    """One configuration; prints its figures, returns (no request failed, service CPU ms per receipt)."""
    clients = max(args.min_clients, args.clients_per_device * devices)
    prefix = run_id()
    with Harness(f"service{devices}") as h:
        emulators = h.start_emulators(devices, device_time_ms=0, latency_ms=0)
        service = h.start_service(emulators, workers=args.workers, threads=args.threads)
        numbers = [e.number for e in emulators]
        warm_up(service.port, numbers, prefix)

        meters = {"service": CpuMeter([service.proc.pid]), "emulators": CpuMeter([e.proc.pid for e in emulators])}
        probe, run, ok, failed, span = measure_window(
            service.port, meters, lambda client, seq: onec_request(f"{prefix}-{seq}", numbers[client % devices]),
            clients, args)
        n = max(1, len(ok))
        latencies = [s.latency * 1000 for s in ok]
        documents = sum(len(e.documents()) for e in emulators)
        answered = sum(1 for s in run.samples if s.ok) + devices  # + the warm-up receipts
        cpu_ms = probe.delta("service") * 1000 / n

        suffix = f"{devices}_devices"
        result(f"service_rps_{suffix}", len(ok) / span, "receipts/s")
        result(f"service_cpu_ms_per_receipt_{suffix}", cpu_ms, "ms", 2)
        result(f"service_rps_per_core_{suffix}", 1000 / cpu_ms, "receipts/s")
        result(f"latency_p50_{suffix}", percentile(latencies, 50), "ms")
        result(f"latency_p99_{suffix}", percentile(latencies, 99), "ms")
        result(f"emulator_cpu_ms_per_receipt_{suffix}", probe.delta("emulators") * 1000 / n, "ms")
        result(f"client_cpu_ms_per_receipt_{suffix}", probe.delta("self") * 1000 / n, "ms")
        result(f"machine_cpu_busy_{suffix}", probe.delta("machine"), "fraction", digits=2)
        result(f"clients_{suffix}", clients, "clients")
        result(f"failed_requests_{suffix}", len(failed), "requests")
        result(f"documents_vs_answers_{suffix}", documents - answered, "receipts")
        service_log_summary(service.log)
        if failed:
            log.error("%d of %d requests failed: %s", len(failed), len(run.samples), summarize_errors(failed))
        if documents != answered:
            log.error("the emulators logged %d receipts for %d successful answers", documents, answered)
        return not failed and documents == answered, cpu_ms


def measure_floor(args: argparse.Namespace) -> float:
    """The floor app (bench/floor_app.py) under the same gunicorn, clients and window: CPU ms per request."""
    clients = max(args.min_clients, args.clients_per_device)
    prefix = run_id()
    with Harness("floor") as h:
        server = h.start_service([], workers=args.workers, threads=args.threads, app=FLOOR_APP,
                                 JOURNAL_PATH=str(h.dir / "floor.sqlite3"))
        for i in range(20):  # both workers open their database before the window
            status, _body, raw = post_json(server.port, onec_request(f"{prefix}-warm-{i}"))
            if status != 200:
                raise RuntimeError(f"floor app answered {status}: {raw[:300]!r}")
        probe, _run, ok, failed, span = measure_window(
            server.port, {"service": CpuMeter([server.proc.pid])},
            lambda client, seq: onec_request(f"{prefix}-{seq}"), clients, args)
        cpu_ms = probe.delta("service") * 1000 / max(1, len(ok))
        result("floor_rps", len(ok) / span, "requests/s")
        result("floor_cpu_ms_per_request", cpu_ms, "ms", 2)
        result("floor_failed_requests", len(failed), "requests")
        if failed:
            log.error("floor app: %d requests failed: %s", len(failed), summarize_errors(failed))
        return cpu_ms


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
    args = parser.parse_args(argv)
    setup_logging()
    good = True
    costs: dict[int, float] = {}
    for devices in args.devices:
        log.info("%d device(s): %d workers × %d threads", devices, args.workers, args.threads)
        fine, costs[devices] = measure(devices, args)
        good = fine and good
    if not args.no_floor:
        log.info("floor app: %d workers × %d threads", args.workers, args.threads)
        floor = measure_floor(args)
        base = 1 if 1 in costs else min(costs, default=None)
        if base is not None:
            result("cpu_ratio_to_floor", costs[base] / floor if floor > 0 else float("nan"), "×", 2)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
