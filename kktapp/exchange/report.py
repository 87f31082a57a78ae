"""Writer of the sales report file 1C loads from a "Штрих-М: Кассир 5" register (e.g. ``Pos3.rep``).

One block per Z report (file-exchange.md §2.3): a 3-line header (``#`` = not loaded yet, the
register's number, the shift number), then one transaction per line, 12 fields separated by
``;``: number (increasing across blocks), date ``DD.MM.YYYY``, time ``HH:MM:SS``, type, KKM
number, receipt number, cashier code, goods code, section, price, quantity, amount. windows-1251,
CRLF, no empty line inside (1C's reader stops at the first empty line).

Types written: 11 sale by code, 13 return by code (quantity and amount negative), 15 discount
on a position (by sum: the position's own discount and its share of the receipt's, so 1C loads
each position at the sum the FN recorded), 40 payment, 55 receipt closed, 50 cash in, 51 cash
out, and the shift's report lines 61 (shift closed) and 63 (Z report), which 1C's reader skips.
No 35 (receipt discount): see :func:`_receipt_lines`. Several blocks may follow each other in
one file while it is unread; a file 1C marked ``@`` (loaded) is replaced, never appended to (an
``@`` header mid-file would break 1C's reader).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from ..domain import PaymentType, Receipt, SettlementType, format_rub
from .goods import ENCODING, LOADED, NOT_LOADED

log = logging.getLogger(__name__)

NEWLINE = "\r\n"

# Transaction types (file-exchange.md §2.3, the Кассир reader's list).
SALE = 11
RETURN = 13
POSITION_DISCOUNT = 15
PAYMENT = 40
CASH_IN = 50
CASH_OUT = 51
RECEIPT_CLOSED = 55
SHIFT_CLOSED = 61
Z_REPORT = 63

#: Payment kind in field 8 of a type-40 line. [U] No public source gives the Кассир codes; 1C's
#: "Отчет отдела" does not read type 40 (file-exchange.md §2.3), so these are ours.
PAYMENT_CODES = {
    PaymentType.CASH: 1, PaymentType.ELECTRONIC: 2, PaymentType.PREPAID: 3, PaymentType.CREDIT: 4,
    PaymentType.OTHER: 5,
}
#: Settlement types written as sales and as returns; purchases (buy) are not retail sales and
#: are left out of the file.
SALE_TYPES = frozenset({SettlementType.SELL, SettlementType.SELL_CORRECTION})
RETURN_TYPES = frozenset({SettlementType.SELL_RETURN, SettlementType.SELL_RETURN_CORRECTION})
#: Cashier code in field 7: the service has one cashier per register.
CASHIER_CODE = 1


@dataclass(frozen=True)
class SaleDoc:
    """A fiscalised receipt as the report needs it."""

    when: dt.datetime
    number: int
    receipt: Receipt
    #: Catalogue code of each position ("" = none: the fallback code is written).
    codes: Sequence[str] = ()
    #: Base units per unit sold (package barcodes); empty = all 1.
    coefficients: Sequence[str] = ()


@dataclass(frozen=True)
class CashDoc:
    """Внесение (``amount`` > 0) or выплата (``amount`` < 0)."""

    when: dt.datetime
    amount: int


@dataclass
class BlockTotals:
    """What a block adds up to (kopecks): for the reconciliation and the status page."""

    sales: int = 0
    returns: int = 0
    receipts: int = 0
    payments: dict[str, int] = field(default_factory=dict)
    cash_in: int = 0
    cash_out: int = 0

    def to_dict(self) -> dict:
        """JSON form."""
        return {"sales": self.sales, "returns": self.returns, "receipts": self.receipts,
                "payments": dict(self.payments), "cash_in": self.cash_in, "cash_out": self.cash_out}


@dataclass
class Block:
    """One report block: its lines (without line ends) and totals."""

    lines: list[str]
    totals: BlockTotals
    last_txn: int


def money(kopecks: int) -> str:
    """Roubles with a point and two decimals, as 1C writes prices."""
    return format_rub(kopecks)


def quantity(value: Decimal) -> str:
    """Three decimals with a point."""
    return f"{value.quantize(Decimal('0.001')):f}"


def _unit_price(amount: int, qty: Decimal) -> int:
    return int((Decimal(amount) / qty).to_integral_value(rounding=ROUND_HALF_UP))


class _Lines:
    """Numbered transaction lines of one block."""

    def __init__(self, kkm: int, first_txn: int) -> None:
        self.kkm = kkm
        self.txn = first_txn
        self.lines: list[str] = []

    def add(self, when: dt.datetime, kind: int, doc: int, code: str = "", section: object = "",
            price: str = "", qty: str = "", amount: str = "") -> None:
        self.txn += 1
        self.lines.append(";".join(str(v) for v in (
            self.txn, when.strftime("%d.%m.%Y"), when.strftime("%H:%M:%S"), kind, self.kkm, doc, CASHIER_CODE,
            code, section, price, qty, amount,
        )))


def build_block(
    *, kkm: int, shift: int, docs: Iterable[SaleDoc | CashDoc], first_txn: int, fallback_code: str,
    closed_at: dt.datetime | None = None,
) -> Block:
    """The block of one shift; transaction numbers continue after ``first_txn``."""
    out = _Lines(kkm, first_txn)
    totals = BlockTotals()
    last_when = closed_at
    for doc in docs:
        last_when = doc.when if last_when is None or doc.when > last_when else last_when
        if isinstance(doc, CashDoc):
            if doc.amount >= 0:
                out.add(doc.when, CASH_IN, 0, amount=money(doc.amount))
                totals.cash_in += doc.amount
            else:
                out.add(doc.when, CASH_OUT, 0, amount=money(-doc.amount))
                totals.cash_out += -doc.amount
            continue
        _receipt_lines(out, totals, doc, fallback_code)
    when = closed_at or last_when or dt.datetime.now().replace(microsecond=0)
    out.add(when, SHIFT_CLOSED, 0, amount=shift)
    out.add(when, Z_REPORT, 0, amount=money(totals.sales - totals.returns))
    header = [NOT_LOADED, str(kkm), str(shift)]
    return Block(lines=header + out.lines, totals=totals, last_txn=out.txn)


def _receipt_lines(out: _Lines, totals: BlockTotals, doc: SaleDoc, fallback_code: str) -> None:
    receipt = doc.receipt
    sign = -1 if receipt.type in RETURN_TYPES else 1
    positions = receipt.positions
    codes = list(doc.codes) + [""] * (len(positions) - len(doc.codes))
    coefficients = list(doc.coefficients) + ["1"] * (len(positions) - len(doc.coefficients))
    for i, pos in enumerate(positions):
        code = codes[i] or fallback_code
        qty = pos.quantity * Decimal(coefficients[i] or "1")
        if sign < 0:
            # A return is written at what was paid back: no discount lines to apply.
            out.add(doc.when, RETURN, doc.number, code, pos.department, money(_unit_price(pos.amount, qty)),
                    quantity(-qty), money(-pos.amount))
            continue
        gross = pos.amount + pos.discount
        out.add(doc.when, SALE, doc.number, code, pos.department, money(_unit_price(gross, qty)), quantity(qty),
                money(gross))
        if pos.discount:
            # The whole discount of the position (its own and its share of the receipt's, as the
            # FN recorded it), right after the position's line, never a 35 line. 1C's ImportReport
            # (BPO "ККМ Offline", Кассир module, file-exchange.md §0 source 1) applies a 35 to
            # every position in its array for the whole file with the same receipt number
            # (FindRows by ReceiptNumber only), so receipts of earlier shifts with the same number
            # take part, and it gives the remainder to the position whose index in the WHOLE
            # array equals the count of matches minus one (``Product.IndexInArray =
            # Products.Count() - 1``), usually none or the wrong one: 1C then loads a total the
            # Z report never had. A 15 is matched by code, section and receipt number (fields 8,
            # 9, 6), takes the LAST match (``Product[Product.Count() - 1]``) and subtracts
            # |field 12| from its amount: written right after its 11 line, the last match is
            # that position whatever came before, so field 6 may stay the receipt number within
            # the shift (what the paper receipt shows); kkt writes no other type that 1C matches
            # by receipt number (12, 35-38, 56, 80). 1C converts field 11 to a number too.
            out.add(doc.when, POSITION_DISCOUNT, doc.number, code, pos.department, "", money(pos.discount),
                    money(pos.discount))
    change = receipt.change
    for pay in receipt.payments:
        amount = pay.amount
        if pay.type is PaymentType.CASH and change:
            # What stayed in the drawer: the 40 lines add up to the receipt total.
            taken = min(change, amount)
            amount, change = amount - taken, change - taken
        if amount:
            out.add(doc.when, PAYMENT, doc.number, str(PAYMENT_CODES[pay.type]), amount=money(sign * amount))
            totals.payments[pay.type.value] = totals.payments.get(pay.type.value, 0) + sign * amount
    out.add(doc.when, RECEIPT_CLOSED, doc.number, amount=money(sign * receipt.total))
    totals.receipts += 1
    if sign > 0:
        totals.sales += receipt.total
    else:
        totals.returns += receipt.total


# --------------------------------------------------------------------------- the file


def header_present(data: bytes, kkm: int, shift: int) -> bool:
    """Whether the file already holds the block of this register and shift (loaded or not)."""
    lines = [line.rstrip(b"\r") for line in data.split(b"\n")]
    want = (str(kkm).encode(), str(shift).encode())
    for i in range(len(lines) - 2):
        if lines[i] in (NOT_LOADED.encode(), LOADED.encode()) and (lines[i + 1], lines[i + 2]) == want:
            return True
    return False


def merged_content(old: bytes | None, block: Block) -> tuple[bytes, str]:
    """The file's new content and what was done: "created", "appended" or "replaced"."""
    new = NEWLINE.join(block.lines).encode(ENCODING) + NEWLINE.encode()
    if old is None:
        return new, "created"
    body = old.rstrip(b"\r\n")
    first = body.split(b"\n", 1)[0].rstrip(b"\r")
    if first == NOT_LOADED.encode():
        # Still unread: 1C takes every block at once (a mid-file "#" starts the next one).
        return body + NEWLINE.encode() + new, "appended"
    if first == LOADED.encode() or not body:
        return new, "replaced"
    log.warning("файл отчёта начинается не с # и не с @ (%r): он будет заменён", first[:20])
    return new, "replaced"


def staging_path(path: str) -> str:
    """Where a report file's next content is written before it is renamed into place.

    One fixed name per report file in the same folder (a rename is atomic only within a file
    system), so an export interrupted before the rename is recognised after a restart.
    """
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.kkt-tmp")


def write_staged(staged: str, content: bytes) -> None:
    """Write the whole new content to the staging file, on disk before this returns."""
    try:
        with open(staged, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(staged, 0o664)
    except BaseException:
        try:
            os.unlink(staged)
        except OSError:
            pass
        raise


def publish(staged: str, path: str) -> None:
    """Rename the staged file over the report file: 1C sees the old file or the new, never half."""
    os.replace(staged, path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
