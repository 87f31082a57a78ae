"""The one owner of a device link, in pieces with one job each.

Imports run one way: the service imports this package; its pieces import the journal, the
driver interface and the protocol error codes, never the service (they get an
:class:`~.seat.OwnerHost`). Inside, from the bottom:

* :mod:`.policy` — operations, job kinds, device codes, Russian reasons, timing knobs;
* :mod:`.memory` — what the owner remembers of its device while it holds the link;
* :mod:`.seat` — the host interface and what the pieces of one device's owner share;
* :mod:`.outcome` — recording a job's outcome (journal row, waiters, log line);
* :mod:`.election` — the lock file and the thread that competes for it;
* :mod:`.status` — the shared status snapshot and the link's log lines;
* :mod:`.shift` — the shift policy (open, renew after 24 h, automatic close);
* :mod:`.recovery` — settling unknown outcomes from the FN (the exactly-once rules);
* :mod:`.worker` — the FIFO worker;
* :mod:`.device_owner` — :class:`DeviceOwner`, the assembly the service starts per device.
"""

from __future__ import annotations

from .device_owner import DeviceOwner
from .election import LostLock
from .memory import DeviceState
from .policy import KIND_NAMES, MAX_SEND_ATTEMPTS, OPERATIONS, Reasons, kind_name
from .seat import OwnerHost
from .status import link_text

__all__ = [
    "KIND_NAMES", "MAX_SEND_ATTEMPTS", "OPERATIONS", "DeviceOwner", "DeviceState", "LostLock", "OwnerHost",
    "Reasons", "kind_name", "link_text",
]
