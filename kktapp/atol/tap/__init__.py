"""A wire tap: record, decoded, what any ATOL client says to a device, and read it back.

``python -m kktapp.atol.tap --listen 127.0.0.1:5555 --to 192.168.1.50:5555 --out trace.jsonl``
puts a transparent TCP relay between a client (ATOL's own driver, KKM Server, Frontol, kkt)
and the device, and writes one JSON line per packet, decoded with this project's framing,
task-buffer and command definitions (:mod:`.adapter` is the only module that touches them),
passwords masked. ``--show`` prints a trace as a table, ``--compare`` lines two up.

* :mod:`.decode` — byte streams → records (sans-I/O);
* :mod:`.relay` — the TCP relay and the recorder thread;
* :mod:`.report` — ``--show`` and ``--compare``.
"""

from .decode import Tracer
from .relay import Recorder, Tap, busy_message
from .report import compare, load, show

__all__ = ["Recorder", "Tap", "Tracer", "busy_message", "compare", "load", "show"]
