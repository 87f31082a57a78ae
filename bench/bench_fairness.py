"""Fairness: 50 clients on one device — every request served in arrival order, none timed out.

One emulated register with a device time that makes a receipt take ~0.1–0.15 s, so a queue of
dozens of receipts builds up and each request waits seconds. 50 clients post 10-position
receipts to ``POST /kkt`` in a closed loop; their first requests are staggered by ``--stagger``
ms so that arrival order is well defined (after that, arrivals follow the device's own pace).

Served order is the fiscal document number in each answer (the device numbers documents in the
order it fiscalises them). Request B *overtook* A when A was sent at least ``--margin`` ms before
B but got a higher fiscal document number. The margin absorbs what happens before the service
sees a request (scheduling of client threads and of gunicorn workers on 2 busy cores: reorders
of ~20 ms were seen); anything larger is the service's doing. Figures:

* ``fairness_out_of_order`` — requests that overtook an earlier one (0 for a FIFO service);
* ``fairness_inversions`` — pairs (sent > margin earlier, higher fiscal number) in all;
* ``fairness_out_of_order_in_journal`` — the same against the journal's arrival order (its
  sequence numbers), no margin: the device queue's own FIFO, without HTTP in front of it;
* ``fairness_timeouts`` — requests without a fiscalised answer (client time-out, 504, errors);
* ``fairness_wait_p50`` / ``fairness_wait_p99`` / ``fairness_wait_max`` — client-side latency;
* ``fairness_requests`` and ``fairness_documents_vs_answers`` (emulator log − successful answers).

Run: ``.venv/bin/python bench/bench_fairness.py``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from common import (
    Harness,
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

log = logging.getLogger("bench.fairness")


def fiscal_number(body: dict | None) -> int | None:
    """The fiscal document number of a 1C answer (or a JSON API one), None when there is none."""
    if not body:
        return None
    for key in ("fiscal_document_number", "fd_number"):
        value = body.get(key)
        if value is None and isinstance(body.get("result"), dict):
            value = body["result"].get(key)
        if value not in (None, "", 0):
            return int(value)
    return None


def overtaken(pairs: list[tuple[float, int]], margin: float) -> int:
    """Requests that got a lower fiscal number than some request that arrived > margin earlier.

    ``pairs`` are (arrival time, fiscal number). B is out of order when some A with
    arrival(A) < arrival(B) - margin has fiscal(A) > fiscal(B): B was served before A.
    """
    by_arrival = sorted(pairs)
    count = 0
    best = -1  # highest fiscal number among requests that arrived more than margin before B
    j = 0
    for arrival, number in by_arrival:
        while j < len(by_arrival) and by_arrival[j][0] < arrival - margin:
            best = max(best, by_arrival[j][1])
            j += 1
        if best > number:
            count += 1
    return count


def overtakes(samples: list, margin: float, limit: int = 10) -> list:
    """Up to ``limit`` (earlier, later) sample pairs where the later arrival was served first."""
    served = [s for s in samples if s.ok and fiscal_number(s.body) is not None]
    found = []
    for a in served:
        for b in served:
            if a.start < b.start - margin and fiscal_number(a.body) > fiscal_number(b.body):
                found.append((a, b))
                if len(found) >= limit:
                    return found
    return found


def inverted_pairs(pairs: list[tuple[float, int]], margin: float) -> int:
    """Pairs (A, B) with arrival(A) < arrival(B) - margin but fiscal(A) > fiscal(B)."""
    return sum(1 for ta, na in pairs for tb, nb in pairs if ta < tb - margin and na > nb)


def journal_order(journal_path: str, samples: list) -> list[tuple[int, int]] | None:
    """(journal seq, fiscal number) of each answered request: the service's own arrival order.

    None when the journal cannot be read through its interface (kktapp.journal.Journal).
    """
    try:
        from kktapp.journal import Journal

        journal = Journal(journal_path)
        try:
            pairs = []
            for s in samples:
                number = fiscal_number(s.body) if s.ok else None
                job = journal.find_by_key("receipt", s.key) if number is not None else None
                if job is not None:
                    pairs.append((job.seq, number))
            return pairs
        finally:
            journal.close()
    except Exception:  # a secondary figure; the client-side ones stand alone
        log.exception("could not read the journal %s", journal_path)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests-per-client", type=int, default=3)
    parser.add_argument("--device-time", type=float, default=None, help="emulator --device-time, ms")
    parser.add_argument("--stagger", type=float, default=60.0, help="ms between the clients' first requests")
    parser.add_argument("--margin", type=float, default=50.0, help="client sends closer than this (ms) are a tie")
    parser.add_argument("--duration", type=float, default=60.0, help="no new request after this many seconds")
    parser.add_argument("--wait-timeout", type=float, default=60.0, help="KKT_WAIT_TIMEOUT of the service, s")
    parser.add_argument("--workers", type=int, default=2)
    # Threads per worker ≥ clients: each waiting /kkt request holds a thread, and the kernel may
    # hand most connections to one worker; a request that waits for a free thread is journaled
    # late and loses its place in the queue (seen with 32 threads: dozens of overtakes).
    parser.add_argument("--threads", type=int, default=64)
    args = parser.parse_args(argv)
    setup_logging()
    device_time = DEFAULT_DEVICE_TIME_MS if args.device_time is None else args.device_time
    total = args.clients * args.requests_per_client
    prefix = run_id()

    with Harness("fairness") as h:
        (emulator,) = h.start_emulators(1, device_time_ms=device_time, latency_ms=0)
        service = h.start_service(
            [emulator], workers=args.workers, threads=args.threads, KKT_WAIT_TIMEOUT=args.wait_timeout
        )
        warm_up(service.port, [1], prefix)
        log.info("%d clients × %d receipts on one device (device time %s ms)", args.clients,
                 args.requests_per_client, device_time)  # fmt: skip

        def think(client: int, done: int) -> float:
            # Stagger only the first round; later arrivals follow the device's pace.
            return client * args.stagger / 1000 if done == 0 else 0.0

        run = run_load(
            service.port,
            lambda client, seq: onec_request(f"{prefix}-{seq}", 1),
            args.clients,
            max_requests=total,
            duration=args.duration,
            timeout=args.wait_timeout + 15,
            think=think,
        )
        served = [(s.start, fiscal_number(s.body)) for s in run.samples if s.ok]
        pairs = [(t, n) for t, n in served if n is not None]
        failed = [s for s in run.samples if not s.ok]
        if len(pairs) < len(served):
            log.warning("%d answers carried no fiscal document number", len(served) - len(pairs))
        latencies = [s.latency * 1000 for s in run.samples if s.ok]
        documents = len(emulator.documents())
        answered = len(served) + 1  # + the warm-up receipt

        result("fairness_requests", len(run.samples), "requests")
        result("fairness_out_of_order", overtaken(pairs, args.margin / 1000), "requests")
        result("fairness_inversions", inverted_pairs(pairs, args.margin / 1000), "pairs")
        in_journal = journal_order(str(service.journal), run.samples)
        if in_journal:
            result("fairness_out_of_order_in_journal", overtaken([(float(q), n) for q, n in in_journal], 0.5),
                   "requests")  # fmt: skip
        result("fairness_timeouts", len(failed) + (total - len(run.samples)), "requests")
        result("fairness_wait_p50", percentile(latencies, 50), "ms")
        result("fairness_wait_p99", percentile(latencies, 99), "ms")
        result("fairness_wait_max", max(latencies, default=float("nan")), "ms")
        result("fairness_documents_vs_answers", documents - answered, "receipts")
        for a, b in overtakes(run.samples, args.margin / 1000):
            log.warning("request %s (sent at +%.0f ms, FD %s) was served after %s (sent %.0f ms later, FD %s)",
                        a.key, (a.start - run.started) * 1000, fiscal_number(a.body), b.key,
                        (b.start - a.start) * 1000, fiscal_number(b.body))  # fmt: skip
        service_log_summary(service.log)
        if failed:
            log.error("%d requests failed: %s", len(failed), summarize_errors(failed))
        return 0 if not failed and len(run.samples) == total else 1


#: Emulator ms per task: about 20 tasks per receipt through the service, so ~0.1 s per receipt and
#: a queue of up to 50 receipts (~5 s) in front of the last arrival.
DEFAULT_DEVICE_TIME_MS = 4.0

if __name__ == "__main__":
    sys.exit(main())
