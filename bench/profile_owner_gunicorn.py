"""gunicorn config for diagnosis: count the journal's SQL per process under a benchmark's load.

Each worker counts statements, reads and commits on every journal connection and writes the
totals to ``$OWNER_SQL_DIR/<pid>.json`` when it exits (the harness stops gunicorn at the end of
a run); ``jobs`` counts the jobs accepted, to divide by. Not a benchmark itself (no ``__main__``)::

    mkdir -p /tmp/sql && OWNER_SQL_DIR=/tmp/sql BENCH_GUNICORN_ARGS="-c bench/profile_owner_gunicorn.py" \\
        .venv/bin/python bench/bench_service.py --devices 1
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from profile_owner import SqlCounter

_counter = SqlCounter()
_counter.by_statement = True


def post_fork(server: Any, worker: Any) -> None:
    """Count in every worker from its start."""
    _counter.install()


def worker_exit(server: Any, worker: Any) -> None:
    """Leave this worker's totals for whoever reads them."""
    folder = os.environ.get("OWNER_SQL_DIR")
    if folder:
        Path(folder, f"{os.getpid()}.json").write_text(json.dumps(dict(_counter.snapshot())))
