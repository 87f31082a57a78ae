"""gunicorn config for diagnosis: what the service would cost if whole layers cost nothing.

Not a fix and not a benchmark itself (no ``__main__``): it bounds what cutting a layer can give,
so that a cut is chosen by its ceiling instead of by a guess. ``$WHATIF`` names the layers to
make (nearly) free in every worker, comma-separated:

* ``validation`` — the 1C view's ``parse_receipt`` answers every request with the first
  request's result (its DocNumber swapped in): no schema, no field checks, no device limits;
* ``encode`` — the ATOL driver's ``_prepare`` reuses the task bytes of a step it has encoded
  before (the benchmark's receipts repeat the same goods): no command fields, BCD or text codec;
* ``log`` — the package logger at WARNING: no line per request and per receipt.

Everything else runs as shipped (journal, durable commits, the device conversation, waiting).
Compare with the same command without ``WHATIF``, rounds interleaved, since this host drifts::

    WHATIF=validation,encode,log BENCH_GUNICORN_ARGS="-c bench/whatif_gunicorn.py" \\
        .venv/bin/python bench/bench_service.py --devices 1 --rounds 4
"""

from __future__ import annotations

import logging
import os
from typing import Any


def _free_validation() -> None:
    from kktapp.web import kkt1c

    parse = kkt1c.parse_receipt
    first: list[tuple[dict, Any]] = []

    def parse_receipt(body: object, *args: Any, **kwargs: Any) -> tuple[dict, Any]:
        if not first or not isinstance(body, dict):
            result = parse(body, *args, **kwargs)
            first[:] = [result]
            return result
        data, receipt = first[0]
        return {**data, "DocNumber": body.get("DocNumber")}, receipt

    kkt1c.parse_receipt = parse_receipt  # the view looks the name up in its module per request


def _free_encoding() -> None:
    from kktapp.atol import driver

    prepare = driver.AtolDriver._prepare
    tasks: dict[tuple[str, str], bytes] = {}

    def _prepare(self: driver.AtolDriver, steps: list) -> None:
        todo = []
        for s in steps:
            key = (s.command.name, repr(s.params))
            task = tasks.get(key)
            if task is None:
                todo.append((key, s))
            else:
                s.task = task
        prepare(self, [s for _, s in todo])
        for key, s in todo:
            tasks[key] = s.task

    driver.AtolDriver._prepare = _prepare  # type: ignore[method-assign]


LAYERS = {"validation": _free_validation, "encode": _free_encoding,
          "log": lambda: logging.getLogger("kktapp").setLevel(logging.WARNING)}


def post_worker_init(worker: Any) -> None:
    """After the app is built (its logging configured): make the named layers free."""
    for name in filter(None, os.environ.get("WHATIF", "").split(",")):
        LAYERS[name.strip()]()
