"""Monitoring endpoints: ``GET /healthz`` for load balancers and checks, ``GET /metrics`` for Prometheus.

Both are relative to where the application is mounted (``/kkt/healthz`` under the Apache alias
of the seed) and never touch a device: they read the journal every process shares.

``/healthz`` needs no login and shows no secrets (no device address, no money, no document
numbers): 200 ``{"status": "ok", ...}`` when every device is on line with fresh data and no
receipt is unsettled, else 503 with ``problems``. Warnings (paper near its end, FN expiring,
OFD backlog) are listed without turning the answer into 503.

``/metrics`` answers without a login from METRICS_ALLOWED_ADDRESSES and to any user of the
service with HTTP Basic (Prometheus ``basic_auth``).
"""

from __future__ import annotations

import datetime as dt
import json

from flask import Blueprint, Response, current_app

from kktapp import health
from kktapp.errors import KKTError, http_status
from kktapp.web.auth import AuthError, require

bp = Blueprint("monitoring", __name__)


def _json(body: object, status: int, headers: dict[str, str] | None = None) -> Response:
    response = current_app.response_class(json.dumps(body, ensure_ascii=False), status=status,
                                          mimetype="application/json")
    response.headers["Content-Type"] = "application/json; charset=utf-8"
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


@bp.get("/healthz")
def healthz() -> Response:
    """200 when every device is reachable, fresh and settled; 503 with the problems otherwise."""
    service = current_app.extensions["kkt"]
    now = dt.datetime.now().astimezone()
    devices, problems, warnings = [], [], []
    for number in sorted(service.devices):
        snap = service.snapshot(number)
        found = health.problems(snap, now, service.status_refresh)
        taken = health.read_at(snap)
        devices.append({
            "device": number,
            "link": snap.get("link"),
            "read_at": taken.isoformat(timespec="seconds") if taken else None,
            "queued": (snap.get("queue") or {}).get("queued", 0),
            "unsettled": len(health.unsettled_jobs(snap, now)),
            "ok": not any(p.critical for p in found),
        })
        problems += [p.to_dict() for p in found if p.critical]
        warnings += [p.to_dict() for p in found if not p.critical]
    body = {
        "status": "problem" if problems else "ok",
        "checked_at": now.isoformat(timespec="seconds"),
        "devices": devices,
        "problems": problems,
        "warnings": warnings,
    }
    return _json(body, 503 if problems else 200)


@bp.get("/metrics")
@require("cashier", anonymous_from="METRICS_ALLOWED_ADDRESSES")
def metrics() -> Response:
    """The Prometheus text exposition, read from the journal now (see kktapp.metrics)."""
    from kktapp.metrics import CONTENT_TYPE, render

    response = current_app.response_class(render(current_app.extensions["kkt"]), status=200)
    response.headers["Content-Type"] = CONTENT_TYPE
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(KKTError)
def _refused(exc: KKTError) -> Response:
    headers = exc.headers if isinstance(exc, AuthError) else None
    return _json({"error": exc.to_dict()}, http_status(exc), headers)
