"""What the service costs while nobody posts: N registers connected, no receipts.

A chain's registers are idle most of the day; the service must then leave the host's CPU alone.
The service runs under gunicorn (2 workers, as in bench_service) in front of ``--devices`` (64)
emulated registers, each gets one warm-up receipt (its link and shift open), then nothing is
posted for ``--duration`` seconds (longer than the status refresh, so the periodic status reads
are in the window). Figures:

* ``idle_service_cpu_cores_N_devices`` — the service's CPU use in the window, in cores;
* ``idle_service_cpu_ms_per_device_second`` — the same per register and second;
* ``idle_emulator_cpu_cores_N_devices`` — the emulators' beside it (their answers to the
  status reads, and their own housekeeping).

Run: ``.venv/bin/python bench/bench_idle.py [--devices 64] [--duration 30]``.
"""

from __future__ import annotations

import argparse
import sys
import time

from common import CpuMeter, Harness, result, run_id, setup_logging, warm_up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=64)
    parser.add_argument("--per-process", type=int, default=16, help="emulated registers per emulator process")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured with nothing posted")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after the warm-up, not measured")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    setup_logging()
    n = args.devices

    with Harness("idle") as h:
        emulators = h.start_emulator_fleet(n, args.per_process)
        service = h.start_service(emulators, workers=args.workers)
        warm_up(service.port, [e.number for e in emulators], run_id())
        time.sleep(args.settle)
        meters = {"service": CpuMeter([service.proc.pid]),
                  "emulators": CpuMeter(sorted({e.proc.pid for e in emulators}))}
        for meter in meters.values():
            meter.start()
        t0 = time.monotonic()
        time.sleep(args.duration)
        span = time.monotonic() - t0
        service_cpu, emulator_cpu = meters["service"].elapsed(), meters["emulators"].elapsed()

    result(f"idle_service_cpu_cores_{n}_devices", service_cpu / span, "cores", 3)
    result("idle_service_cpu_ms_per_device_second", service_cpu * 1000 / span / n, "ms", 3)
    result(f"idle_emulator_cpu_cores_{n}_devices", emulator_cpu / span, "cores", 3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
