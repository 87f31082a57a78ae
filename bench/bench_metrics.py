"""What one Prometheus scrape costs: /metrics is computed from the journal at scrape time.

A journal is filled with ``--receipts`` finished receipts (default 100 000: 30 days of a busy
web shop at RESULT_RETENTION_DAYS) spread over ``--devices`` devices, plus a few queued ones, and
a status snapshot per device. Then ``kktapp.metrics.render`` runs ``--scrapes`` times, as each
Prometheus scrape would in any worker process. No device is touched (the service is not started).

Figures:

* ``metrics_scrape_p50`` / ``metrics_scrape_max`` — milliseconds per scrape;
* ``metrics_receipts_counted`` — the done+failed count the scrape reports (must equal the fill).

Run: ``.venv/bin/python bench/bench_metrics.py``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid

from common import result, setup_logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kktapp.journal import Journal
from kktapp.metrics import render
from kktapp.service import DeviceConfig, FiscalService


def fill(path: str, receipts: int, devices: int) -> None:
    """Finished receipts written straight into the jobs table (one transaction)."""
    Journal(path).close()
    conn = sqlite3.connect(path)
    now = time.time()
    rows = []
    for i in range(receipts):
        created = now - (i % (30 * 86400))
        state = "done" if i % 50 else "failed"
        rows.append((str(uuid.uuid4()), 1 + i % devices, "receipt", f"bench-{i}", "fp", "1c", "{}", state,
                     '{"fiscal_document_number": 1}' if state == "done" else None,
                     None if state == "done" else '{"code": 103, "message": "нет бумаги"}',
                     created, created + 0.3 + (i % 7) * 0.2))
    conn.executemany(
        "INSERT INTO jobs (id, device, kind, key, fingerprint, source, payload, state, result, error,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receipts", type=int, default=100_000)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--scrapes", type=int, default=20)
    args = parser.parse_args()
    setup_logging()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "journal.sqlite3")
        fill(path, args.receipts, args.devices)
        devices = [DeviceConfig(n, f"Касса {n}", f"socket://127.0.0.1:{9 + n}") for n in range(1, args.devices + 1)]
        service = FiscalService(path, devices)
        service.start = lambda: None  # type: ignore[method-assign]  # read-only: no device owners
        for n in range(1, args.devices + 1):
            service.journal.save_snapshot(n, {"link": "ok", "read_at": None, "fn": {"unsent_count": 0}})
        times, text = [], b""
        for _ in range(args.scrapes):
            started = time.perf_counter()
            text = render(service)
            times.append((time.perf_counter() - started) * 1000)
        counted = sum(
            float(line.rsplit(" ", 1)[1]) for line in text.decode().splitlines()
            if line.startswith("kkt_receipts_total{")
        )
        service.journal.close()
    result("metrics_scrape_p50", statistics.median(times), "ms")
    result("metrics_scrape_max", max(times), "ms")
    result("metrics_receipts_counted", int(counted), "receipts")
    return 0 if int(counted) == args.receipts else 1


if __name__ == "__main__":
    sys.exit(main())
