"""Prometheus metrics, computed from the journal at scrape time.

Why not prometheus_client's counters in process memory (or its multiprocess mode): under Apache
mod_wsgi and gunicorn several processes serve /metrics, and the receipts are fiscalised by
whichever process holds a device (see :mod:`kktapp.owner`), which changes on restarts and
reloads. In-process counters would differ per process and reset with it; multiprocess mode
needs a shared directory set in the environment before the import, cleaned of dead processes'
files on every restart, which mod_wsgi does not do for us. The journal already is the one
shared, durable record of every receipt and every device's last status, so each scrape reads
it: every process answers the same numbers, they survive restarts, and counters stay monotonic
because pruned receipts are added to an archive (:func:`kktapp.journal._archive_receipt_counts`).
A scrape costs two grouped queries over the journal's retention window plus one snapshot read
per device.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from . import health
from .journal import DURATION_BUCKETS

if TYPE_CHECKING:
    from .service import FiscalService

#: Content type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class JournalCollector:
    """A prometheus_client collector that reads the service's journal and device snapshots."""

    def __init__(self, service: FiscalService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        """Every metric, read now."""
        svc = self.service
        now = dt.datetime.now().astimezone()
        receipts = CounterMetricFamily(
            "kkt_receipts", "Чеки с окончательным результатом: done — пробит, failed — ошибка, "
            "cancelled — отменён оператором", labels=["device", "result"])
        duration = HistogramMetricFamily(
            "kkt_receipt_duration_seconds", "Время от приёма пробитого чека до ответа с фискальным документом, с",
            labels=["device"])
        for row in svc.journal.receipt_counts():
            receipts.add_metric([str(row["device"]), row["result"]], row["count"])
            if row["result"] == "done":
                cumulative, buckets = 0, []
                for bound, n in zip(DURATION_BUCKETS, row["buckets"], strict=True):
                    cumulative += n
                    buckets.append((_bound(bound), cumulative))
                buckets.append(("+Inf", row["count"]))
                duration.add_metric([str(row["device"])], buckets, row["duration_sum"])
        yield receipts
        yield duration

        gauges = {
            "queue": GaugeMetricFamily("kkt_queue_length", "Чеки и операции в очереди кассы", labels=["device"]),
            "unsettled": GaugeMetricFamily(
                "kkt_unsettled_receipts", "Неподтверждённые документы: результат выясняется или копия не напечатана",
                labels=["device"]),
            "up": GaugeMetricFamily(
                "kkt_device_up", "1 — касса на связи и данные свежие, 0 — нет", labels=["device"]),
            "read_age": GaugeMetricFamily(
                "kkt_data_age_seconds", "Сколько секунд назад касса последний раз ответила", labels=["device"]),
            "shift": GaugeMetricFamily(
                "kkt_shift_age_seconds", "Сколько секунд открыта смена по часам ККТ (0 — закрыта)", labels=["device"]),
            "fn": GaugeMetricFamily("kkt_fn_days_left", "Дней до окончания срока ФН", labels=["device"]),
            "ofd": GaugeMetricFamily(
                "kkt_ofd_unsent_documents", "Документы, не отправленные в ОФД", labels=["device"]),
            "ofd_age": GaugeMetricFamily(
                "kkt_ofd_oldest_unsent_age_seconds", "Возраст самого старого неотправленного в ОФД документа, с "
                "(0 — всё отправлено)", labels=["device"]),
        }
        for number in sorted(svc.devices):
            snap = svc.snapshot(number)
            label = [str(number)]
            queue = snap.get("queue") or {}
            gauges["queue"].add_metric(label, queue.get("queued", 0))
            gauges["unsettled"].add_metric(label, len(health.unsettled_jobs(snap, now)))
            problems = health.problems(snap, now, svc.status_refresh)
            down = any(p.code in ("link_down", "no_data", "stale") for p in problems)
            gauges["up"].add_metric(label, 0 if down else 1)
            taken = health.read_at(snap)
            if taken is not None:
                gauges["read_age"].add_metric(label, max(0.0, (now - taken).total_seconds()))
            age = health.shift_age(snap, now)
            if snap.get("shift"):
                gauges["shift"].add_metric(label, max(0.0, age.total_seconds()) if age is not None else 0)
            days = health.fn_days_left(snap, now.date())
            if days is not None:
                gauges["fn"].add_metric(label, days)
            fn = snap.get("fn") or {}
            if fn:
                gauges["ofd"].add_metric(label, int(fn.get("unsent_count") or 0))
                oldest = health.ofd_oldest_age(snap, now)
                gauges["ofd_age"].add_metric(label, max(0.0, oldest.total_seconds()) if oldest else 0)
        yield from gauges.values()


def _bound(value: float) -> str:
    # Prometheus writes bucket bounds like floats ("0.25", "1.0").
    return repr(float(value))


def render(service: FiscalService) -> bytes:
    """The text exposition of all metrics for one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JournalCollector(service))
    return generate_latest(registry)
