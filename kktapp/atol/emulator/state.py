"""What the emulated ATOL 55Ф remembers, and how it survives a restart.

A real device keeps its counters and documents in the fiscal storage (FN) and its open receipt
in non-volatile memory, so pulling the plug loses nothing that was fiscalised. The emulator does
the same with two files next to each other:

* ``STATE`` — one JSON object (counters, shift, cash, clock offset), replaced atomically (temp
  file + ``os.replace``) after every fiscal document and every change to cash, counters,
  clock or a pending print, so a crash leaves either the old or the new state, never a torn
  file. The open receipt is written only on a clean stop or power-off: a killed process loses
  it (the reasons and the consequences are in :meth:`.device.Device.save`);
* ``STATE.docs.jsonl`` — the fiscal documents, one JSON object per line, appended. Documents are
  append-only in an FN too; rewriting all of them into the state file after every receipt would
  make long benchmark runs quadratic.

A document is appended *before* the state that counts it is replaced; on load, lines beyond the
state's last document number are ignored (the device "crashed" before committing them).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

log = logging.getLogger(__name__)

#: Factory serial number of the emulated device (14 digits, as ATOL prints it).
DEFAULT_SERIAL = "00106201273705"


@dataclass
class OpenReceipt:
    """A receipt between "open receipt" and "close receipt"; money in kopecks."""

    #: ATOL receipt type byte (1 sell, 2 sell return, 4 buy, 5 buy return, 7..10 corrections).
    type: int
    test: bool = False
    no_print: bool = False
    #: Positions as they go into the document log (name, price, quantity str, amount, tax, …).
    items: list[dict[str, Any]] = field(default_factory=list)
    #: Payments as ``{"type": "cash", "amount": kopecks}``.
    payments: list[dict[str, Any]] = field(default_factory=list)
    #: Receipt-level discount (command 43), kopecks; the project spreads discounts into
    #: positions, so this is normally 0.
    discount: int = 0
    #: FFD attributes written with the "write attribute" command, tag → value (str or int).
    attributes: dict[str, Any] = field(default_factory=dict)
    #: Receipt-level taxes (command B8), as given.
    taxes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Receipt total after the receipt-level discount."""
        return sum(int(i["amount"]) for i in self.items) - self.discount

    @property
    def paid(self) -> int:
        """Sum of all payments entered so far."""
        return sum(int(p["amount"]) for p in self.payments)


@dataclass
class DeviceState:
    """Everything the device keeps across power cycles (the FN and its non-volatile memory)."""

    serial: str = DEFAULT_SERIAL
    #: Fiscal storage number (16 digits) and registration number of the KKT.
    fn_number: str = ""
    reg_number: str = ""
    fiscal: bool = True
    #: Current mode (0 select, 1 registration, 2 X, 3 Z, 4 programming, 5, 6) and sub-mode.
    mode: int = 0
    submode: int = 0
    #: Operator who entered the current mode (1..28 cashiers, 29 system administrator).
    operator: int = 0
    #: Device clock = host clock + this many seconds (tests move it forward).
    clock_offset: float = 0.0
    shift_open: bool = False
    #: Number of the current shift, or of the last one when closed.
    shift_number: int = 0
    #: Device time the current shift was opened (ISO), None when closed.
    shift_opened_at: str | None = None
    #: Number of the last receipt in the current shift (0 right after opening).
    receipt_number: int = 0
    #: Last fiscal document number in the FN.
    fd_number: int = 0
    receipt: OpenReceipt | None = None
    #: Cash in the drawer, kopecks.
    cash: int = 0
    #: Shift totals by receipt type name ("sell", "sell_return", …), kopecks; cleared when a
    #: shift opens (and by general clearing), so a closed shift keeps its own (command 58).
    shift_totals: dict[str, int] = field(default_factory=dict)
    #: The same over the device's life: the non-resettable totals (register 12), never cleared.
    grand_totals: dict[str, int] = field(default_factory=dict)
    #: Documents not yet confirmed by the OFD (0 unless a test sets it).
    unsent: int = 0
    #: FD number of the last document kept for reprint (0 = buffer empty).
    last_document: int = 0
    #: A fiscalised document whose paper copy has not been printed (paper ran out).
    print_pending: bool = False
    #: Cash in/out run without an FN document (Device.cash_documents off), over the device's
    #: life. Saved with the cash they moved: the Shtrih-M operating document number (0x11)
    #: counts them besides the FN's documents, and must not go back after a restart.
    cash_only_documents: int = 0

    @property
    def receipt_open(self) -> bool:
        """A receipt is open (test-mode receipts included)."""
        return self.receipt is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceState:
        """Rebuild from :meth:`to_dict`; unknown keys (older/newer emulator) are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        receipt = values.get("receipt")
        if isinstance(receipt, dict):
            rknown = {f.name for f in fields(OpenReceipt)}
            values["receipt"] = OpenReceipt(**{k: v for k, v in receipt.items() if k in rknown})
        return cls(**values)


def read_document_lines(path: str | os.PathLike[str]) -> Iterator[dict[str, Any] | None]:
    """Each line of a JSON-lines document log as a dict, or None where it is not one.

    The emulator appends a line per fiscal document; a crash while appending leaves a line
    that is not JSON, and readers (the store, tests, benchmarks) decide what that means.
    """
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                yield None
                continue
            yield doc if isinstance(doc, dict) else None


class Store:
    """Persistence of :class:`DeviceState` and the fiscal documents (or memory only)."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.docs_path = self.path + ".docs.jsonl" if self.path else None

    def load(self, serial: str) -> tuple[DeviceState, list[dict[str, Any]]]:
        """Read the state and its documents; a fresh device when there is no file yet."""
        if not self.path:
            return DeviceState(serial=serial), []
        if not os.path.exists(self.path):
            # A new device: documents left by an earlier one under the same name are not ours.
            if self.docs_path and os.path.exists(self.docs_path):
                os.unlink(self.docs_path)
            return DeviceState(serial=serial), []
        with open(self.path, encoding="utf-8") as f:
            state = DeviceState.from_dict(json.load(f))
        docs: list[dict[str, Any]] = []
        dropped = 0
        if self.docs_path and os.path.exists(self.docs_path):
            for doc in read_document_lines(self.docs_path):
                # None: a line cut short by a crash while appending; the state never counted it.
                if doc is not None and int(doc.get("fd_number", 0)) <= state.fd_number:
                    docs.append(doc)
                else:
                    dropped += 1
        if dropped and self.docs_path:
            # Rewrite without them, or the next document would share a number with a ghost.
            log.warning("emulator: dropping %d uncommitted document line(s) from %s", dropped, self.docs_path)
            self._write_atomically(self.docs_path, "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
        return state, docs

    @staticmethod
    def _write_atomically(path: str, text: str) -> None:
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".kkt-emu-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def save(self, state: DeviceState) -> None:
        """Replace the state file atomically. No fsync: the emulator guards against its own
        crash, not a host power loss, and fsync per receipt would slow benchmarks down."""
        if not self.path:
            return
        self._write_atomically(self.path, json.dumps(state.to_dict(), ensure_ascii=False))

    def append_document(self, doc: dict[str, Any]) -> None:
        """Add one fiscal document to the document file."""
        if not self.docs_path:
            return
        with open(self.docs_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
