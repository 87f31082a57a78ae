"""Efficiency against the physical limit: 64 devices at ~0.5 s per receipt, how close does the service get?

The emulator's ``--device-time`` is the time the device is busy with each *task* (each command
of the ATOL task buffer), so a receipt's device time is (tasks per receipt) × device time. The
script first measures how many tasks the driver needs for one 10-position receipt (a throw-away
emulator at a small device time, the driver talking to it directly), picks the device time that
makes a receipt take ``--receipt-time`` (0.5 s), and measures that receipt time again on one of
the N (``--devices``, default 64) emulated registers with the driver alone — the devices' own
pace, no service in between. The devices' maximum is then N / receipt time.

The registers run ``--per-process`` (16) to a process (bench/multi_emulator.py): 64 Python
interpreters would cost the 2-core machine more than the service does.

Then the service runs under gunicorn in front of the N registers and closed-loop clients (two
per device, so each device always has the next receipt queued) post 10-position receipts to
``POST /kkt`` for ``--duration`` seconds. Figures:

* ``efficiency_N_devices`` — receipts/s achieved in the window ÷ the devices' maximum (issue 15:
  ≥ 0.97 at 64);
* ``efficiency_rps_N_devices`` and ``device_max_rps_N_devices`` — the two terms;
* ``device_receipt_time`` — one receipt on one device via the driver alone;
* ``service_receipt_cycle`` — N / achieved receipts/s: the device time one receipt takes
  through the service; the difference to device_receipt_time is what the service adds;
* ``efficiency_latency_p50`` / ``efficiency_latency_p99`` — client-side latency at that load;
* ``efficiency_queue_implied_wait`` — what the queue alone makes a request wait: with k clients
  per device each request finds k − 1 ahead of it (one running, the rest queued), so about
  k × device_receipt_time (Little's law); ``efficiency_p99_over_queue_wait`` is p99 minus that
  (issue 15: ≤ 100 ms);
* ``efficiency_service_cpu_busy`` — the service's CPU use in the window, in cores (and per
  receipt); the emulators' and the whole machine's beside it: on a shared 2-core machine a low
  efficiency with a busy machine says the CPU, not the service's queueing, was the limit;
* ``efficiency_device_idle_fraction`` — the share of the registers' time in the window they
  stood with no task to run (the registers' own account: bench/multi_emulator.py's pace lines),
  about 1 − efficiency; ``efficiency_device_idle_ms_per_receipt`` the same per receipt: the gap
  between one receipt's last task and the next receipt's first;
* ``efficiency_emulator_late_ms_per_receipt`` — of that gap, how late the emulator itself was
  with the answer the service waited for (it shares the cores with the service): the rest is
  the service's, and the emulator's lateness in taking the next batch in, which it cannot see.

Run: ``.venv/bin/python bench/bench_efficiency.py`` (``--devices 16`` for a shorter run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import statistics
import sys
import time

from common import (
    CpuMeter,
    Emulator,
    Harness,
    Probe,
    fleet_pace,
    onec_receipt,
    onec_request,
    percentile,
    result,
    run_id,
    run_load,
    service_log_summary,
    setup_logging,
    summarize_errors,
    warm_up,
)

log = logging.getLogger("bench.efficiency")


def driver_receipt_times(emulator: Emulator, count: int) -> list[float]:
    """Seconds per 10-position receipt with the driver alone (the shift is opened first)."""
    from kktapp.atol.commands import LIMITS
    from kktapp.atol.driver import AtolDriver
    from kktapp.web.kkt1c import parse_receipt

    _data, receipt = parse_receipt(onec_receipt("calibration"), dt.date.today(), {}, LIMITS)
    driver = AtolDriver(emulator.url)
    driver.connect()
    try:
        if not driver.status().shift_open:
            driver.open_shift()
        times = []
        for _ in range(count):
            t0 = time.monotonic()
            driver.sell(receipt)
            times.append(time.monotonic() - t0)
        return times
    finally:
        driver.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=64)
    parser.add_argument("--per-process", type=int, default=16, help="emulated registers per emulator process")
    parser.add_argument("--receipt-time", type=float, default=0.5, help="target device seconds per receipt")
    parser.add_argument("--device-time", type=float, default=None, help="emulator ms per task (default: calibrated)")
    parser.add_argument("--calibration-device-time", type=float, default=20.0, help="ms per task while counting")
    parser.add_argument("--clients-per-device", type=int, default=2)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--ramp", type=float, default=3.0, help="seconds at the start not measured")
    parser.add_argument("--max-requests", type=int, default=5000)
    # Same server shape as bench_service (2 workers for 2 cores). Threads: every client's request
    # holds a thread while it waits for its device and the kernel may hand most connections to
    # one worker, so each worker gets a thread per client (default: clients in all).
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    setup_logging()
    prefix = run_id()
    n = args.devices

    with Harness("efficiency") as h:
        device_time = args.device_time
        if device_time is None:
            (probe_emu,) = h.start_emulators(1, device_time_ms=args.calibration_device_time)
            per_receipt = min(driver_receipt_times(probe_emu, 2))
            h.stop(probe_emu.proc)
            tasks = max(1, round(per_receipt * 1000 / args.calibration_device_time))
            device_time = round(args.receipt_time * 1000 / tasks, 1)
            log.info("a receipt took %.0f ms at %s ms/task: ~%d tasks; device time %.1f ms/task", per_receipt * 1000,
                     args.calibration_device_time, tasks, device_time)  # fmt: skip

        emulators = h.start_emulator_fleet(n, args.per_process, device_time_ms=device_time)
        own = driver_receipt_times(emulators[0], 2)
        receipt_time = statistics.median(own)
        max_rps = n / receipt_time
        direct_receipts = len(own)

        clients = args.clients_per_device * n
        service = h.start_service(emulators, workers=args.workers, threads=args.threads or clients)
        numbers = [e.number for e in emulators]
        warm_up(service.port, numbers, prefix)

        emulator_pids = sorted({e.proc.pid for e in emulators})
        probe = Probe({"service": CpuMeter([service.proc.pid]), "emulators": CpuMeter(emulator_pids)})
        run = run_load(
            service.port,
            lambda client, seq: onec_request(f"{prefix}-{seq}", numbers[client % n]),
            clients,
            max_requests=args.max_requests,
            duration=args.duration,
            timeout=60,
            on_start=lambda t0: probe.arm(t0, (args.ramp, args.duration)),
        )
        probe.join()
        t_from, t_to = run.started + args.ramp, run.started + args.duration
        ok = [s for s in run.window(t_from, t_to) if s.ok]
        failed = [s for s in run.samples if not s.ok]
        rps = len(ok) / (t_to - t_from)
        latencies = [s.latency * 1000 for s in ok]
        documents = sum(len(e.documents()) for e in emulators)
        answered = sum(1 for s in run.samples if s.ok) + n + direct_receipts

        result(f"efficiency_{n}_devices", rps / max_rps, "fraction", 3)
        result(f"efficiency_rps_{n}_devices", rps, "receipts/s")
        result(f"device_max_rps_{n}_devices", max_rps, "receipts/s")
        result("device_receipt_time", receipt_time * 1000, "ms")
        # What a receipt costs each device through the service (queue never empty): compare.
        result("service_receipt_cycle", n / rps * 1000 if rps else float("nan"), "ms")
        result("device_time_per_task", device_time, "ms")
        result("efficiency_latency_p50", percentile(latencies, 50), "ms")
        p99 = percentile(latencies, 99)
        result("efficiency_latency_p99", p99, "ms")
        implied = args.clients_per_device * receipt_time * 1000
        result("efficiency_queue_implied_wait", implied, "ms")
        result("efficiency_p99_over_queue_wait", p99 - implied, "ms")
        if len(probe.readings) >= 2:
            cores = probe.delta("service") / (probe.readings[1]["time"] - probe.readings[0]["time"])
            result("efficiency_service_cpu_busy", cores, "cores", 2)
            span = probe.readings[1]["time"] - probe.readings[0]["time"]
            result("efficiency_emulator_cpu_busy", probe.delta("emulators") / span, "cores", 2)
            result("efficiency_machine_cpu_busy", probe.delta("machine"), "fraction", 2)
            if ok:
                result("efficiency_service_cpu_ms_per_receipt", probe.delta("service") * 1000 / len(ok), "ms")
        pace = fleet_pace(emulators, t_from, t_to)
        if pace is not None and pace.register_seconds > 0 and pace.ends:
            result("efficiency_device_idle_fraction", pace.idle / pace.register_seconds, "fraction", 3)
            result("efficiency_device_idle_ms_per_receipt", pace.idle * 1000 / pace.ends, "ms")
            result("efficiency_emulator_late_ms_per_receipt", pace.late * 1000 / pace.ends, "ms")
        result("efficiency_failed_requests", len(failed), "requests")
        result("efficiency_documents_vs_answers", documents - answered, "receipts")
        service_log_summary(service.log)
        if failed:
            log.error("%d of %d requests failed: %s", len(failed), len(run.samples), summarize_errors(failed))
        return 0 if not failed and documents == answered else 1


if __name__ == "__main__":
    sys.exit(main())
