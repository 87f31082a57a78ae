"""KKM Server's POST /Execute against the 1C endpoint: service CPU and latency per receipt.

One emulated device (``--device-time 0 --latency 0``), the service under gunicorn, closed-loop
clients posting 10-position receipts: first to ``POST /kkt`` (1C), then — on the same service —
``RegisterCheck`` to ``POST /Execute`` with a fresh IdCommand each. The KKM Server path does
more per receipt: an IdCommand registry row written before the job and its final answer
written after it (both durable), and the routing of NumDevice 0. Figures:

* ``onec_cpu_ms_per_receipt`` / ``kkmserver_cpu_ms_per_receipt`` — CPU of the gunicorn master
  and workers in the measuring window ÷ receipts answered in it;
* ``kkmserver_cpu_ratio`` — the second over the first;
* ``onec_latency_p50`` / ``kkmserver_latency_p50`` — client-side latency;
* ``kkmserver_documents_vs_answers`` — receipts the emulator logged minus successful answers
  (0: exactly once).

Run: ``.venv/bin/python bench/bench_kkmserver.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from common import (
    CpuMeter,
    Harness,
    Probe,
    Request,
    Sample,
    onec_request,
    percentile,
    result,
    run_id,
    run_load,
    setup_logging,
    summarize_errors,
    warm_up,
)

log = logging.getLogger("bench.kkmserver")


def kkmserver_request(key: str, positions: int = 10, price: int = 195) -> Request:
    """RegisterCheck as salesduck/kkmserver-types describes it: NumDevice 0, payment by card."""
    strings = [{"Register": {"Name": f"Товар {i}", "Quantity": 1, "Price": price, "Amount": price, "Tax": 22,
                             "SignMethodCalculation": 4, "SignCalculationObject": 1}} for i in range(1, positions + 1)]
    body = {"Command": "RegisterCheck", "NumDevice": 0, "IdCommand": key, "Timeout": 60, "IsFiscalCheck": True,
            "TypeCheck": 0, "CashierName": "Иванов И.И.", "CheckStrings": strings,
            "ElectronicPayment": price * positions}
    return Request("POST", "/Execute", json.dumps(body, ensure_ascii=False).encode(), key,
                   {"Content-Type": "application/json"})


def phase(name: str, port: int, make: Callable[[int, int], Request], meter: CpuMeter,
          args: argparse.Namespace) -> tuple[float, float, int, int]:
    """One closed-loop run; returns (CPU ms per receipt, p50 ms, answered, failed)."""
    probe = Probe({"service": meter})
    window = (args.ramp, args.duration)
    run = run_load(port, make, args.clients, max_requests=args.max_requests, duration=args.duration,
                   timeout=args.timeout, on_start=lambda t0: probe.arm(t0, window))
    probe.join()
    t_from, t_to = run.started + window[0], probe.readings[1]["time"]

    def good(sample: Sample) -> bool:
        # KKM Server answers HTTP 200 whatever happened: Status 0 is success.
        return sample.ok and (sample.body or {}).get("Status", 0) == 0

    ok = [s for s in run.window(t_from, t_to) if good(s)]
    failed = [s for s in run.samples if not good(s)]
    if failed:
        log.error("%s: %d of %d requests failed: %s", name, len(failed), len(run.samples), summarize_errors(failed))
    cpu_ms = probe.delta("service") * 1000 / max(1, len(ok))
    p50 = percentile([s.latency * 1000 for s in ok], 50)
    return cpu_ms, p50, sum(1 for s in run.samples if good(s)), len(failed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of load per endpoint")
    parser.add_argument("--ramp", type=float, default=1.0, help="seconds at the start not measured")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--max-requests", type=int, default=20000)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args(argv)
    setup_logging()
    prefix = run_id()
    with Harness("kkmserver") as h:
        emulators = h.start_emulators(1, device_time_ms=0, latency_ms=0)
        service = h.start_service(emulators, workers=args.workers, threads=args.threads)
        warm_up(service.port, [emulators[0].number], prefix)
        meter = CpuMeter([service.proc.pid])
        onec_cpu, onec_p50, _, onec_failed = phase(
            "1C", service.port, lambda client, seq: onec_request(f"{prefix}-1c-{seq}", emulators[0].number),
            meter, args)
        before = len(emulators[0].documents())
        km_cpu, km_p50, km_answered, km_failed = phase(
            "KKM Server", service.port, lambda client, seq: kkmserver_request(f"{prefix}-km-{seq}"), meter, args)
        documents = len(emulators[0].documents()) - before
    result("onec_cpu_ms_per_receipt", onec_cpu, "ms")
    result("kkmserver_cpu_ms_per_receipt", km_cpu, "ms")
    result("kkmserver_cpu_ratio", km_cpu / onec_cpu if onec_cpu else 0.0, "x", digits=2)
    result("onec_latency_p50", onec_p50, "ms")
    result("kkmserver_latency_p50", km_p50, "ms")
    result("kkmserver_documents_vs_answers", documents - km_answered, "receipts")
    return 0 if not (onec_failed or km_failed) and documents == km_answered else 1


if __name__ == "__main__":
    sys.exit(main())
