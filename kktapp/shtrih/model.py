"""Choices the Shtrih-M layer makes, each with its source: timeouts, passwords, codes, waits.

Tags as in shtrih-protocol.md: [C] two or more sources agree, [S] one source, [U] our own
inference, not yet checked on a device. Everything [U] that a device could prove wrong lives
here, in one place, so that a device log changes one line.
"""

from __future__ import annotations

from ..domain import INTERNET_SETTLEMENT as INTERNET_SETTLEMENT
from ..domain import TAG_INTERNET as TAG_INTERNET
from ..domain import TAG_SETTLEMENT_PLACE as TAG_SETTLEMENT_PLACE
from ..domain import PaymentType, SettlementType, VatRate

#: [C] Default TCP port of the device (opos DefRemotePort, e-kiosk ShtrihTCPFRBase.h).
DEFAULT_PORT = 7778
#: [C] Default passwords: 1 cashier, 30 system administrator; drivers use 30 for everything
#: (javapos operatorPassword = 30, e-kiosk always appends 30). §2.
SYSADMIN_PASSWORD = 30
ADMIN_PASSWORD = 29
CASHIER_PASSWORDS = range(1, 29)

# --------------------------------------------------------------------------- link timing

#: [S] e-kiosk: 100 ms for the answer to ENQ or for ACK/NAK; we allow more for TCP under load.
CONTROL_TIMEOUT = 1.0
#: [S] javapos byte timeout 3000 ms once an answer frame has started.
BYTE_TIMEOUT = 3.0
#: Answers kept from ENQ → ACK reads (only the last matters; a bound against a stuck device).
KEPT_ANSWERS = 3
#: [C] Attempts: ENQ 3 (opos), command resends on NAK 3, answer re-reads on a bad LRC 3.
ENQ_ATTEMPTS = 3
COMMAND_RESENDS = 3
ANSWER_REREADS = 3
#: [S] opos GetCommandTimeout, seconds, by command code; DEFAULT_TIMEOUT for the rest.
TIMEOUTS: dict[int, float] = {
    0x10: 3, 0x11: 3, 0x17: 3, 0x1E: 3, 0x1F: 3, 0x21: 3, 0x22: 3, 0x23: 3,
    0x25: 10, 0x28: 10, 0x50: 10, 0x51: 10, 0x80: 10, 0x81: 10, 0x82: 10, 0x83: 10, 0x84: 10,
    0x86: 10, 0x87: 10, 0x88: 10, 0x89: 10, 0x8D: 10, 0xB0: 10,
    0x40: 30, 0x41: 30, 0x85: 30, 0x16: 60, 0xE0: 100,
}
#: [S] opos: FF01-FF4B get 30 s.
FN_COMMAND_TIMEOUT = 30.0
DEFAULT_TIMEOUT = 10.0

# --------------------------------------------------------------------------- waiting for the printer

#: [S] opos WaitForPrinting polls every 100 ms for up to 60 s.
PRINT_POLL = 0.1
PRINT_WAIT = 60.0
#: [S] opos sends 0xB0 at most 3 times in one wait.
CONTINUE_ATTEMPTS = 3
#: [S] e-kiosk waits up to 120 s for a Z report, sleeping 350 ms first.
Z_WAIT = 120.0
#: [C] Busy answer 0x50 ("printing the previous command"): wait and send again.
BUSY_RETRY_PAUSE = 0.1
BUSY_RETRIES = 50

# --------------------------------------------------------------------------- status bytes


class Mode:
    """[C] Low nibble of the mode byte (opos ECRMODE_*, pyshtrih FRMode, e-kiosk)."""

    WORK = 0
    DUMP = 1
    SHIFT_OPEN = 2
    SHIFT_EXPIRED = 3
    SHIFT_CLOSED = 4
    LOCKED = 5
    CONFIRM_DATE = 6
    RECEIPT_OPEN = 8
    FULL_REPORT = 11
    EKLZ_REPORT = 12


class Submode:
    """[C] Printing sub-mode (opos AMODE_*, pyshtrih FRSubMode, e-kiosk)."""

    IDLE = 0
    PAPER_OUT_PASSIVE = 1
    PAPER_OUT_ACTIVE = 2
    AFTER_PAPER_OUT = 3
    PRINTING_REPORT = 4
    PRINTING = 5


#: [S] opos: submode 0 in these modes still means "printing a long report": keep waiting.
REPORT_MODES = frozenset({Mode.FULL_REPORT, Mode.EKLZ_REPORT, 14})
#: [C] Flags word of 0x10/0x11, the bits the service reads.
FLAG_RECEIPT_ROLL = 1 << 1
FLAG_RECEIPT_OPTICAL = 1 << 7
FLAG_RECEIPT_LEVER = 1 << 9
FLAG_COVER_OPEN = 1 << 10
FLAG_DRAWER_OPEN = 1 << 11

#: [S] Money register 241 = cash in the drawer for the shift, read with 0x1A (OpenPapyrus
#: Src/PPEquip/Shtrihfr.cpp: CASH_AMOUNT_REG 241 «наличность в кассе за смену», GetSummator reads
#: it with GetCashReg, DrvFR's 0x1A). Not in the protocol note. [U] whether 0x50/0x51 move it on
#: a real device (the emulator's do): settled by 0x1A before and after one 0x50.
REGISTER_CASH = 241

# --------------------------------------------------------------------------- receipts

#: [C] 0x8D receipt type: 0 sale, 1 buy, 2 sale return, 3 buy return; also the high nibble of
#: mode 8. Corrections open as the receipt of their sign [U], with tag 1173 marking them.
RECEIPT_TYPES: dict[SettlementType, int] = {
    SettlementType.SELL: 0, SettlementType.BUY: 1, SettlementType.SELL_RETURN: 2, SettlementType.BUY_RETURN: 3,
    SettlementType.SELL_CORRECTION: 0, SettlementType.BUY_CORRECTION: 1,
    SettlementType.SELL_RETURN_CORRECTION: 2, SettlementType.BUY_RETURN_CORRECTION: 3,
}
#: [C] FF46 operation type = tag 1054: 1 income, 2 income return, 3 expense, 4 expense return.
OPERATION_TYPES: dict[SettlementType, int] = {
    SettlementType.SELL: 1, SettlementType.SELL_RETURN: 2, SettlementType.BUY: 3, SettlementType.BUY_RETURN: 4,
    SettlementType.SELL_CORRECTION: 1, SettlementType.SELL_RETURN_CORRECTION: 2,
    SettlementType.BUY_CORRECTION: 3, SettlementType.BUY_RETURN_CORRECTION: 4,
}
CORRECTION_TYPES = frozenset({
    SettlementType.SELL_CORRECTION, SettlementType.SELL_RETURN_CORRECTION,
    SettlementType.BUY_CORRECTION, SettlementType.BUY_RETURN_CORRECTION,
})
#: [C] FF45 payment slots (1-based): 1 cash, 2-13 electronic, 14 advance, 15 credit, 16 other.
PAYMENT_SLOTS: dict[PaymentType, int] = {
    PaymentType.CASH: 1, PaymentType.ELECTRONIC: 2, PaymentType.PREPAID: 14,
    PaymentType.CREDIT: 15, PaymentType.OTHER: 16,
}
PAYMENT_SLOT_COUNT = 16
#: [C] FF45 tax sums: 6 groups (drivers send zeros: the device computes, T1F14 = 0).
TAX_SUM_COUNT = 6
#: [C] FF46 "let the device compute" marker for amount and tax amount.
AUTO_SUM = 0xFF_FF_FF_FF_FF
#: [C] FF46 department 0..16; 0 is a free sale.
MAX_DEPARTMENT = 16
#: The FN's limit of positions in one receipt (the same FN as ATOL's: fiscal-rules.md §3).
MAX_POSITIONS = 250
#: [C] FF46 name (tag 1030) up to 128 bytes; FF45 text up to 64.
ITEM_NAME_BYTES = 128
CLOSE_TEXT_BYTES = 64
#: [C] Text fields of classic commands (0x17, 0x80-0x85) are NUL-padded to at least 40 bytes.
MIN_TEXT_BYTES = 40
#: [C] TLV per FF0C/FF4D call (opos, pyshtrih TLV_LEN_MAX).
MAX_TLV_BYTES = 250
#: [C] Text codec of every Shtrih-M text field.
ENCODING = "cp1251"
#: [U] Line width used for formatted text when the model is unknown (ШТРИХ-М-01Ф, pyshtrih).
LINE_WIDTH = 48

# --------------------------------------------------------------------------- the 2026 tax codes

#: FF46 tax byte: a bit mask, not the table-6 row (§5).
#: Rows 1-6 [C: opos GetFSTaxBits, javapos getVatCodeShtrih]: 1 << (row - 1).
#: Rows 7-10 (5 %, 7 %, 5/105, 7/107) [S: javapos FiscalPrinterImpl 18 Feb 2026; 7/107 was 0x90
#: two weeks earlier] and rows 11-12 (22 %, 22/122) = 0xCB/0xCC [S javapos; U the reading]: one
#: vendor source that changed them inside February 2026. The device needs table 17 field 71 = 2
#: to take 22 % as sent (with 1 it turns row 1, 20 %, into 22 % by itself after 1 Jan 2026).
TAX_CODES: dict[VatRate, int] = {
    VatRate.VAT20: 0x01, VatRate.VAT10: 0x02, VatRate.VAT0: 0x04, VatRate.NONE: 0x08,
    VatRate.VAT120: 0x10, VatRate.VAT110: 0x20,
    VatRate.VAT5: 0x81, VatRate.VAT7: 0x82, VatRate.VAT105: 0x84, VatRate.VAT107: 0x88,
    VatRate.VAT22: 0xCB, VatRate.VAT122: 0xCC,
}
#: [S] ШТРИХ-NANO-Ф codes for 22 % and 22/122 (javapos getVatCodeShtrihNano); the emulator
#: accepts them too, and the superseded 0x90 for 7/107.
EXTRA_TAX_CODES: dict[int, VatRate] = {0x90: VatRate.VAT22, 0xA0: VatRate.VAT122}
VAT_BY_TAX_CODE: dict[int, VatRate] = {**{v: k for k, v in TAX_CODES.items()}, **EXTRA_TAX_CODES}

# --------------------------------------------------------------------------- settlement-state report

# «Отчёт о текущем состоянии расчётов» (the FN's document 21), layouts in commands.py:
# [C] FF38 forms and prints it: system administrator password(4); answer FD number(4), fiscal
#   sign(4), documents the OFD has not confirmed(4), date of the first of them(3: YY MM DD),
#   all little-endian (opos FSPrintCalcReport, javapos FSPrintCalcReport, pyshtrih
#   fs_calculation_state_report and its 0xFF38 answer handler). opos and pyshtrih send FF38 on
#   its own, and so does a DrvFR-based 1C driver (VitalyKravtsov2016/MITSUFP, MitsuDrv1C
#   Devices1C3.ReportCurrentStatusOfSettlements32: FNBuildCalculationStateReport, then
#   WaitForPrinting).
# [C] FF37 starts it: sysadmin password(4), answer the error only (javapos FSStartCalcReport;
#   opos lists FF37 "start report on calculations" with a 30 s timeout). [S] Tags go between
#   FF37 and FF38, as for the shift reports: a fr_drv_ng host (SAMSON Group's CShtrihInterface
#   .reportOfdExchangeStatus) sends FNBeginCalculationStateReport, the operator's 1021/1203,
#   then FNBuildCalculationStateReport. So the driver sends FF37 and FF0C only with a cashier.
# [C] Both get 30 s (opos GetCommandTimeout; FN_COMMAND_TIMEOUT).
# [U] The emulator asks for an administrator's password (29, 30) as for X and Z reports: the
#   sources send the system administrator's and name no other. A closed or open shift alike.

# --------------------------------------------------------------------------- FFD tags

TAG_CASHIER_NAME = 1021
TAG_CASHIER_INN = 1203
TAG_CUSTOMER_CONTACT = 1008
TAG_CORRECTION_TYPE = 1173
TAG_CORRECTION_BASIS = 1174
TAG_CORRECTION_DATE = 1178
TAG_CORRECTION_ORDER = 1179
TAG_UNIT = 2108
# Internet settlements (fiscal-rules.md §5): 1187 (the site) and 1125 (= 1), numbers defined in
# the domain and imported above. [C] Receipt tags go by FF0C before FF45 like 1008 (§4.6: opos,
# pyshtrih; ≤ 250 bytes of TLV a call, so 1187's 243 characters fit). [S] javapos TLVTags
# declares 1187 ASCII. [U] 1125 as one byte 01: its FFD type is not found (the reasoning and what
# settles it: kktapp/atol/model.py, internet settlements); sent only for a receipt that says it
# is an internet settlement, so a firmware that refuses the tag fails only those receipts.

#: [C] FF0A document types this layer decodes: 2 shift open, 3 receipt, 4 BSO, 5 shift close,
#: 31 correction receipt (§4.6; 4 and 31 decode as 3).
DOC_SHIFT_OPEN = 2
DOC_RECEIPT = 3
DOC_BSO = 4
DOC_SHIFT_CLOSE = 5
DOC_CORRECTION = 31
#: [S] 21 "отчёт о текущем состоянии расчётов" in FF0A: opos FSFindDocument decodes it as
#: date-time(5), FD(4), fiscal sign(4), documents the OFD has not confirmed, date-time of the
#: first of them(5). [U] the count's width: opos's comment says 4 bytes, its code reads 2 (and
#: checks a 20-byte minimum, which fits 2); this layer reads 2, and uses only FD and sign.
DOC_SETTLEMENT_REPORT = 21
RECEIPT_DOC_TYPES = frozenset({DOC_RECEIPT, DOC_BSO, DOC_CORRECTION})
SHIFT_DOC_TYPES = frozenset({DOC_SHIFT_OPEN, DOC_SHIFT_CLOSE})
#: [S] Cash in/out (0x50/0x51) form no FN document on a real device: the FN's document types
#: (javapos ``FSDocType``: fiscalisation, shift open, receipt, shift close, FN close, BSO,
#: re-registration, correction, settlement report; FFD has the same list) have none for them, and
#: 0x50 answers only a 2-byte operating document number [C opos, pyshtrih]. The emulator forms
#: none either by default; ``cash_documents=True`` makes its shared core form one, answered by
#: FF0A as type 0 in the receipt layout. The driver returns either: the FN's document when FF01
#: moved, else FD 0 and the answer's document number.
#: A lost 0x50/0x51 answer is settled by 0x11's operating document number, which every document
#: moves, not by the FD number: the owner keeps it in the journal before sending
#: (ShtrihDriver.counted_kinds, document_counter) and, after reconnecting, recovery
#: (kktapp/owner/recovery.py) asks counted_result: unmoved → not done (sent again), moved by one
#: (mod 0x10000) with the drawer (REGISTER_CASH, kept beside the number) moved by exactly the
#: amount → done, with that document's result; otherwise → OutcomeUnknown, left to the operator
#: with the reason and never sent again (other documents were formed at the device too).
#: [U] what a real device does: no FN document, and one 0x50 moving 0x11's number by exactly
#: one; settled by FF01 and 0x11 read before and after one 0x50 on a registered device.
DOC_CASH = 0
