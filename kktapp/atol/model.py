"""The ATOL wire model the driver and the emulator share, with the source of every choice.

Sources are the letter codes of /work/shared/docs/atol-real-device.md (which supersedes
atol-protocol.md): Z vending-machine firmware, C Crystal Set Retail 10 ATOL3 driver, K Cyberplat
kiosk ATOL3 driver, A atol4j, U Unact/kkm. [C] two or more sources agree, [S] one source, [U]
this project's choice where the sources are silent, each with what would settle it (the vendor
manual "Протокол работы ККТ, версия 3.1" or a capture from a real device: the probe,
``python -m kktapp.atol.probe URL``, writes one). The byte layouts themselves are in
:mod:`.commands` with their source; the numbers here are not restated anywhere else.
"""

from __future__ import annotations

import enum

# Tag numbers the domain decides on are defined there once and re-exported here.
from ..domain import INTERNET_SETTLEMENT as INTERNET_SETTLEMENT
from ..domain import TAG_INTERNET as TAG_INTERNET
from ..domain import TAG_SETTLEMENT_PLACE as TAG_SETTLEMENT_PLACE
from ..domain import TAG_TAXATION as TAG_TAXATION

# --------------------------------------------------------------------------- identifiers

#: [C A,C,K] Host packet IDs and task IDs cycle through 0x00..0xDF (Z uses 0x01..0xDE); C's
#: receiver rejects incoming IDs above 0xDF except 0xF0.
ID_MIN = 0x00
ID_MAX = 0xDF
#: [C C,K] The device's unsolicited packets (async results) carry this packet ID.
ASYNC_PACKET_ID = 0xF0

#: [U] How many unfinished tasks the device's buffer holds before it answers B1 (Overflow): the
#: driver's write window. With EA + EB per position a 100-position receipt takes two writes.
#: Also unknown: whether results kept until Ack (NeedResult) count against it; the emulator
#: counts only tasks not yet ended, and the driver acks every kept result before its next batch.
#: Settle with the manual or by filling the buffer of a real device.
TASK_BUFFER_CAPACITY = 128

# --------------------------------------------------------------------------- task buffer answers
#
# Sources are the letter codes of atol-real-device.md: Z (vending firmware), C (Crystal Set
# Retail 10 ATOL3 driver), K (Cyberplat kiosk ATOL3 driver), A (atol4j), U (Unact/kkm).
#
# [C Z,K] Synchronous answers, on the SAME packet ID as the request:
#   Add (C1): ``A1`` | ``A2`` | ``A8`` (keep waiting) | ``A3 reply…`` | ``A4 reply…`` |
#       ``A5 TId`` (Stopped) | ``B1`` | ``B2`` | ``B4``.
#   Req (C3 TId): the same, ``B3`` for an unknown TId (Z: "not found, Add again").
#   Ack (C2 TId): ``A3`` once the kept result is released, ``B3`` for an unknown TId.
#   Abort (C4): ``A3`` once the buffer is empty (Z).
# [C C,Z,K,A] Asynchronous answers on packet ID 0xF0: ``A6 TId reply…`` (done) and
#   ``A7 TId 55 err …`` (failed). C waits for them on tasks sent with NeedResult (0x01) and
#   treats an A7 for a flag-0 task as that task's failure; no source sets WaitAsyncData.
#   So the device pushes A6/A7 for a NeedResult task whose Add was answered before it ended,
#   and A7 for ANY failed task in that case. (The emulator also pushes for WaitAsyncData.)
# [S C] NeedResult keeps the result until Ack (C2): the host Acks what it has read. [U] A task
#   without it is forgotten once its result was delivered; until then a Req may still read it,
#   and a new Add may reuse its TId (only a kept NeedResult result makes B2).
# [U] AckAdd (C5) is named by K but its layout is not found: the driver does not use it.
#
#: [C Z,K] ``A5`` is followed by one TId. [U] Which one: this model sends the TId of the task
#: that FAILED and stopped the buffer (the host learns the culprit from any stopped task).
#: Settle with a capture of a batch that fails in the middle.
STOPPED_CARRIES_FAILED_TID = True
#: [S K] B4 (illegal value) is followed by the index of the bad parameter: 0 flags, 1 TId.
#: [U] A request that cannot be parsed at all is answered ``B4 00``.
BAD_PARAMETER_FLAGS = 0
BAD_PARAMETER_TID = 1
#: [S K] A5 means the task was pending when an earlier task failed. [U] That NEW Adds are also
#: stopped, and that an Ack of the failed TId lifts the stop, are this model's (not found in
#: any source); every source recovers with Abort (C4), and so does the driver.
STOPPED_UNTIL_ACK_OR_ABORT = True
#: [U] Seconds of silence after which the host asks a NeedResult task's state with Req (C3)
#: instead of waiting for its A6/A7 (C falls back to Req on its timeout). Short enough that a
#: lost A6 costs little, long enough that a busy device is not flooded.
REQ_AFTER_SILENCE = 1.0

# --------------------------------------------------------------------------- passwords and modes


class Mode(enum.IntEnum):
    """[C Z,A] Device modes (low nibble of the mode byte; sub-mode in the high nibble)."""

    SELECT = 0
    REGISTRATION = 1
    REPORT_X = 2
    REPORT_Z = 3
    PROGRAMMING = 4
    FP_ACCESS = 5
    FN_ACCESS = 6
    EXTRA = 7


#: [C C,K,Z] Access password (first two bytes of every task): ``00 00``.
ACCESS_PASSWORD = 0
#: [S K] Factory users: system administrator 30, administrator 29, cashiers 1..28; by default
#: each one's mode password equals its number (K). C enters modes with 30, Z with 1 and 30.
SYSADMIN_PASSWORD = 30
ADMIN_PASSWORD = 29
CASHIER_PASSWORDS = range(1, 29)
#: [U] Modes a cashier password may enter; both administrators may enter all of them.
CASHIER_MODES = frozenset({Mode.REGISTRATION, Mode.REPORT_X})
#: [C Z,K,A] Error for a wrong mode password (56) or a wrong access password.
WRONG_PASSWORD_ERROR = 0x8C

#: [C Z,K,A] Mode bytes (sub-mode << 4 | mode) a report shows while it is being made: Z report
#: printing (3.2 = 0x23), then its FN work (7.1 = 0x17); X report printing (2.2 = 0x22). C polls
#: 45 (Z polls 3F) until the mode leaves them before its next command.
Z_PRINTING_MODE = 0x23
Z_FN_MODE = 0x17
X_PRINTING_MODE = 0x22
REPORT_PROGRESS_MODES = frozenset({Z_PRINTING_MODE, Z_FN_MODE, X_PRINTING_MODE})

#: [C A,C] 67 "report without clearing" (mode 2) carries one report-type byte: C sends 1 for
#: the X report (FiscalDevice.printXReport, XReportCommand(1)); A names the types
#: (PrintReportCommand: 1 daily X, 2 sections, 3 cashiers, 5 hourly, 7 counts, 8 service,
#: **9 "фискальный отчёт о текущем состоянии расчётов"**) and enters mode 2 for all of them
#: (ReportCommandBuilder.printReport). K sends only 1 (AtolFRConstants.h Balances::XReport).
REPORT_X_DAILY = 1
REPORT_SETTLEMENT_STATE = 9
#: [S A] 67 9 forms an FN document: A calls it the FISCAL report of the settlement state, the
#: FN lists it among its documents (FFD document type 21, DocType.CALCULATION_STATE; current
#: document 0x17 in the FN status: pyshtrih handle_fs_current_document, an ATOL-side FN header
#: FS_CURDOC_CURRENT_PAY_REPORT), and a Web Requests re-implementation (archdemon
#: atol.webserver Utils.isFiscalOperation) counts reportOfdExchangeStatus among the fiscal
#: operations with openShift and closeShift. [U] That 67 9 answers the plain ``55 00 00`` of
#: 67 1 and then shows the X report's progress mode 0x22 while printing; that its FD number is
#: then read like a Z report's (A4 30, A4 45/46: no source reads it after 67 9); and that the
#: device takes the cashier (E8 1021/1203, DOCUMENT_TAGS) before it in mode 2, as libfptr's
#: report is made after operatorLogin. Settle with a capture of 67 9 on a registered device:
#: its answer, the modes 45 shows after it, A4 30 before and after, A4 45 of the new FD.

# --------------------------------------------------------------------------- error codes

#: [U] No source has a "shift closed" error: 0x9D is absent from K's full table and A's list,
#: and a real device opens the shift itself on 92 and 4F ([S K] AtolFRBase: "operations that
#: open a shift"; K never sends 49, which the emulator lets open it too [U]). The emulator
#: never answers it; the code stays named only because the service's retry policy (owner.py)
#: lists it. Settle: the manual's error list.
SHIFT_CLOSED_ERROR = 0x9D
#: [C K,A] Answer to a command code the device does not know (0x7A "model cannot execute").
UNKNOWN_COMMAND_ERROR = 0x7A
#: [C Z,K,A] Answer to a request of the wrong length.
BAD_LENGTH_ERROR = 0x14
#: [U] 5A with the shift already closed: K's 0x8F "обнулённая касса (повторное гашение
#: невозможно)" is the nearest code in its table. Settle with a Z report on a closed shift.
ALREADY_CLOSED_ERROR = 0x8F

# --------------------------------------------------------------------------- FFD versions

#: [S K] Register 0x36 (6 bytes): byte 0 the KKT's FFD, byte 1 the FN's, numbered as FFD tag
#: 1209 (K's enum: 1 = 1.0, 2 = 1.05, 3 = 1.1); [U] 4 = 1.2 (tag 1209 value, FFD 1.2 text).
FFD_1_0 = 1
FFD_1_05 = 2
FFD_1_1 = 3
FFD_1_2 = 4
FFD_NAMES = {FFD_1_0: "1.0", FFD_1_05: "1.05", FFD_1_1: "1.1", FFD_1_2: "1.2"}
#: [U] The E6 position command is the FFD 1.0 path (Z labels it "ФН 1.00"); EA/EB is the 1.05+
#: path ([C Z,C,K]). Whether 1.05/1.2 firmware still takes E6, and 1.0 firmware EA/EB, is not
#: found: the emulator refuses the other path (0x7A) so that path selection is tested.
FIRST_EA_EB_FFD = FFD_1_05

# --------------------------------------------------------------------------- positions

#: [C Z,K] The tax byte of EB (and E6) is the FFD tag 1199 value
#: (:attr:`kktapp.domain.VatRate.tag1199`): 1 = 20 %, 2 = 10 %, 3 = 20/120, 4 = 10/110,
#: 5 = 0 %, 6 = no VAT (Z; K on firmware builds >= 3689, "unified taxes").
#: [U] 2026 rates: 7 = 5 %, 8 = 7 %, 9 = 5/105, 10 = 7/107, 11 = 22 %, 12 = 22/122 — the tag 1199
#: values of fiscal-rules.md §1; no protocol-level source has them. They need firmware that knows
#: the 2026 rates: 5 % and 7 % came with the driver 10.10.6 firmware, 22 % with firmware 5.17.0
#: (one user report, fiscal-rules.md S12); older firmware answers 0xEE with extended code 0x0104
#: ("недопустимый номер ставки налога"). Settle with one EB of each rate on a 5.17+ device.
TAX_IS_TAG1199 = True
#: [S C] EB flags: bit 0 clear = execute (set = check only; C and K leave it clear); 0x02 = do
#: not check the cash in the drawer. C's AddPositionCommand sets 0x02 on every position, with
#: the comment that the device otherwise answers an error even for a refund paid by card (the
#: POS checks cash itself); bits 2..7 must be 0 (C refuses to send them). K sends 0. kkt sends
#: 0x02 like C: whether a card refund goes through must not depend on the drawer. The emulator
#: checks the position against the drawer on a receipt that pays out only without it; the cash
#: a receipt really pays out is checked at 4A either way ([U], the emulator's own rule).
POSITION_NO_CASH_CHECK = 0x02
#: [C C,K,Z] EB's sum ("стоимость позиции") is the position's final amount, and the discount
#: fields stay 0: C's fiscalizeSum sends EndPositionPrice there with discount 0 (its comment:
#: when price x quantity differs from it, the device takes the difference for a discount and
#: prints it on the receipt); K sends the sum with discount 0, Z labels the field "фактическая
#: цена" and sends discount 0. EB's discount field is "информация о скидке": C sends it only with
#: sum = price x quantity (its AddPositionCommand refuses otherwise), so it is not how a
#: position's total is set, and kkt never uses it.
#: [U] A markup (amount above price x quantity, e.g. a spread receipt discount rounded up by a
#: kopeck) goes the same way, sum = amount: no source shows a device taking or refusing a sum
#: above price x quantity; a refusal is a clean device error at that position (nothing
#: formed). The emulator takes it and prints the difference as a markup. Settle: one EB with
#: sum > price x quantity on a real device.
EB_SUM_IS_POSITION_TOTAL = True
#: [C Z,C] E6 (FFD 1.0) has no sum field: ``discType discSign disc(6 BCD)`` after the quantity
#: (Z: type "процент/число", sign "скидка/наценка"; C: sign 1 for a negative discount). kkt
#: sends price x quantity and the difference to the amount as a discount (sign 0) or markup
#: (sign 1), so the position total is round_half_up(price x quantity) -/+ disc. [U] discType 1
#: = a sum in kopecks (0 = percent); the values are not found. Settle: one E6 with a discount on
#: an FFD 1.0 device.
E6_DISCOUNT_ADJUSTS_SUM = True

# --------------------------------------------------------------------------- 99 reply
#
# [C C,A] 99 (payment) answers ``55 err remainder(5 BCD) change(5 BCD)``, 12 bytes. C's
# AddPaymentResult reads the remainder two bytes after the 55 (its taskbuffer.Response data
# offset points at the 55); A's RemittanceResult decodes only replies of exactly 12 bytes (its
# offsets 3..7 and 8..12 are one byte off for that length: A's bug). atol-real-device.md §3 took
# A's offsets for a third head byte (``55 err 00 …``, 13 bytes), and a device emulator written
# from the doc may answer that: both are accepted, told apart by length (commands.py,
# ``other_heads``); the emulator answers C's form. The service uses neither field, so a success
# reply that fits neither form is logged and the receipt goes on: 99 is often read after 4A has
# already closed the receipt, where a decoding error would report a fiscalised receipt as lost.

# --------------------------------------------------------------------------- FFD attributes (E8)
#
# [C C,K] ``E8 flags blockCount blockNumber tag(2 LE) len(2 LE) value``: flags 1 = print the
# attribute, a single block is ``01 00``. [S K] Timing: receipt tags only outside EA..EB (ext
# 0x0208 inside), position tags only between EA and EB (ext 0x0207 outside); both as error 0xEE
# with the extended code in register 0x37 (55). [S K] A repeated receipt tag: ext 0x0201.
# [C Z,K] 1212 and 1214 travel in EB as BCD bytes, not as E8.
# [C C,K] Receipt tags go right after 92, before the first EA: C writes 1008 and 1021 just
# after 92 (AtolServiceImpl.openDocument), K writes 1008 before EA; libfptr users set every
# receipt tag (1008, 1173, 1174, 1192, ...) before openReceipt. kkt writes them all there.
# [U] Values: strings in the device text codec (:func:`kktapp.atol.codec.encode_text`);
# integer tags one byte; 1178 (a date) 4 bytes LE unix time at 00:00 UTC (FFD UnixTime).
#
# [C] Correction receipts: 1173 (type, one byte) is a receipt tag of its own, and 1174 (the
# correction basis) is a composite (STLV) tag whose value is the TLVs of 1178 (date of the
# corrected settlement) and, by an FNS order, 1179 (order number): libfptr users build 1174
# with utilFormTlv from 1178 and 1179 and set 1173 and 1174 before openReceipt (several
# independent clients, e.g. pbardov/node-atol-rpc correction.task.ts correctionBaseDate /
# correctionBaseNumber; fiscal-rules.md §2 for the tags). FFD 1.05 also knows 1177 (a
# description) in 1174; FFD 1.2 dropped it and kkt does not send it. [U] The emulator refuses
# 1178 or 1179 written on their own, a malformed 1174, and a correction receipt closed without
# 1173 and 1174 (0x13); what a real device answers to them is not found.
# [U] 2108 (unit, FFD 1.2) as an E8 position tag: not found in any source.
#
# Tag 1055 (the receipt's taxation system, :data:`kktapp.domain.TAG_TAXATION`):
# [C] 92 has no field for it: its request is ``flags type`` (Z's CheckOpenRequest, A's
#   OpenBillCommand, K's AtolFRBase::openDocument, C's OpenDocumentCommand), so it travels as a tag.
# [S K] K writes it with E8 like its other fiscal fields (AtolOnlineFRBase::setTLV, flags 01,
#   one block): its field TaxSystem is declared type Byte (FiscalFieldDescriptions.h), the value
#   being the 1055 bit (ETaxSystems: 0x01 ОСН .. 0x20 патент). K sends it only when the receipt
#   names a system, and refuses, before the receipt, a system that the registration (A4 43 byte
#   39) lacks (FFEngine::checkTaxSystem_OnPayment); so does kkt (driver.py, _check_taxation).
# [C] The value is the bit itself: libfptr's LIBFPTR_TT_* (OSN 0x01, USN_INCOME 0x02,
#   USN_INCOME_OUTCOME 0x04, ESN 0x10, PATENT 0x20; U's libfptr10.h, fiscal-rules.md S10) are
#   what its clients pass to setParam(1055, ...), and javapos TLVTags declares 1055 a one-byte
#   bit mask.
# [U] Where: K writes it after the last EB, just before 4A; kkt writes it right after 92 with the
#   other receipt tags. libfptr clients set 1055 before openReceipt, and K's extended code
#   0x010A ("registration with a taxation system other than the one the receipt was opened
#   with") says the device ties the system to the open receipt, so it is given before the first
#   position. Settle: one receipt with 1055 on a device registered for two systems, or a
#   capture of libfptr's openReceipt with 1055 set.
# [U] The emulator refuses a 1055 that is not exactly one bit of its registration with 0xEE and
#   K's extended code 0x0103 "Некорректная СНО" (EXT_BAD_TAXATION); what a device answers is not
#   found.
#
# Internet settlements (fiscal-rules.md §5: from 01.09.2025 1008, 1187 = the site, and 1125):
# [C] 1187 (place of settlement) is a string tag set per receipt: ATOL's JSON tasks carry it as
#   paymentsPlace (pbardov/node-atol-rpc src/types/fiscal.task.ts), and libfptr clients set it
#   before openReceipt (a libfptr wrapper: setParam(1187, task.paymentsPlace); a 1C hotel
#   configuration: the hotel's site for an internet payment; neither repository identified, found
#   in the tool library by their setParam calls); KKM Server's PlaceMarket is "место расчетов,
#   тег ОФД 1187 (если не задано — берется из регистрационных данных ККТ)" (salesduck/
#   kkmserver-types RegisterCheck.ts); javapos TLVTags declares it ASCII.
#   [U] On the wire: E8 with the text in the device codec like 1008 and 1021, which C and K
#   write so; no protocol-level source writes 1187 itself. Settle: one receipt with 1187.
# [C] 1125 (признак расчёта в сети «Интернет») is 1 for an internet settlement: FNS letter
#   АБ-4-20/8172@ of 08.09.2025 on order ЕД-7-20/236@, as quoted by buhgalter-vlg.ru/?p=3478 and
#   20pravo25.ru ("Как заполнять в чеке ... тег 1125"). [S] libfptr takes it as a boolean:
#   setParam(1125, True) for an internet payment, False otherwise, with driver 10.10.7.0 or newer
#   (the 1C hotel configuration above).
#   [U] Its FFD type and length are not found: kkt sends one byte 01, as libfptr's booleans and
#   every FFD "признак" tag are one byte (javapos TLVTags: 1108 "признак ККТ для расчетов только
#   в Интернет", 1109, 1110, 1126 all one-byte). It is written only for a receipt that says it
#   is an internet settlement (opt-in: firmware older than the tag may refuse it, and then only
#   those receipts fail, cleanly, before any position). Settle: the FFD table of 1125 in order
#   ЕД-7-20/236@, or a capture of libfptr 10.10.7+ with setParam(1125, true).
# [U] FFD 1.0 (E6 path): position tags follow E6 and apply to the position just registered.

TAG_CUSTOMER_CONTACT = 1008
TAG_ITEM_NAME = 1030
TAG_CASHIER_NAME = 1021
TAG_CASHIER_INN = 1203
TAG_CORRECTION_TYPE = 1173
TAG_CORRECTION_BASIS = 1174
TAG_CORRECTION_DESCRIPTION = 1177
TAG_CORRECTION_DATE = 1178
TAG_CORRECTION_ORDER = 1179
#: The tags 1174 may hold (1177: FFD 1.05 only).
CORRECTION_BASIS_TAGS = frozenset({TAG_CORRECTION_DESCRIPTION, TAG_CORRECTION_DATE, TAG_CORRECTION_ORDER})
TAG_PAYMENT_OBJECT = 1212
TAG_PAYMENT_METHOD = 1214
TAG_UNIT = 2108

#: E8 flags: print the attribute (C, K); one block, number 0.
ATTRIBUTE_PRINT = 0x01
ATTRIBUTE_ONE_BLOCK = 1

#: Position tags and the value the device assumes when the host does not write them.
POSITION_TAG_DEFAULTS = {TAG_PAYMENT_METHOD: 4, TAG_PAYMENT_OBJECT: 1, TAG_UNIT: 0}
#: Tags that belong to a position (written between EA and EB).
POSITION_TAGS = frozenset({TAG_ITEM_NAME, TAG_PAYMENT_OBJECT, TAG_PAYMENT_METHOD, TAG_UNIT})

#: [U] FFD 1.0 only: E6 has room for 64 bytes of name; a longer name follows E6 at once as tag
#: 1030 (E8). EB takes up to 128 bytes itself ([C Z,C,K]), so the 1.05+ path never needs it.
LONG_NAME_BY_TAG1030 = True
#: [C] Positions in one receipt: the FN holds one document in 32,768 bytes, "roughly 250
#: positions" (fiscal-rules.md §3). [U] 250 is taken as the limit; a receipt of long names may
#: still be refused by the FN at closing, which is a clean device error (nothing formed).
MAX_POSITIONS = 250
#: Receipt-level tags.
RECEIPT_TAGS = frozenset({
    TAG_CUSTOMER_CONTACT, TAG_CASHIER_NAME, TAG_CASHIER_INN, TAG_CORRECTION_TYPE, TAG_CORRECTION_BASIS,
    TAG_TAXATION, TAG_SETTLEMENT_PLACE, TAG_INTERNET,
})
STRING_TAGS = frozenset({TAG_CUSTOMER_CONTACT, TAG_ITEM_NAME, TAG_CASHIER_NAME, TAG_CASHIER_INN,
                         TAG_CORRECTION_DESCRIPTION, TAG_CORRECTION_ORDER, TAG_SETTLEMENT_PLACE})
BYTE_TAGS = frozenset({TAG_PAYMENT_OBJECT, TAG_PAYMENT_METHOD, TAG_UNIT, TAG_CORRECTION_TYPE, TAG_TAXATION,
                       TAG_INTERNET})
UNIXTIME_TAGS = frozenset({TAG_CORRECTION_DATE})

#: [U] Cashier tags outside a receipt (not found in any source): E8 is also accepted with no
#: receipt open, in mode 1 (before 9A/49/4F), mode 2 (before 67 9, the settlement-state
#: report, REPORT_SETTLEMENT_STATE) and mode 3 (before 5A), for these tags only; the device
#: keeps them for the next document it forms in that mode and forgets them when the mode is
#: left. Other tags with no receipt open: 0x9A. Should a device refuse, the driver makes the
#: report again without the cashier.
DOCUMENT_TAGS = frozenset({TAG_CASHIER_NAME, TAG_CASHIER_INN})
ATTRIBUTE_MODES = frozenset({Mode.REGISTRATION, Mode.REPORT_X, Mode.REPORT_Z})

#: [S K] Extended error codes (register 0x37) the emulator uses.
EXT_ATTRIBUTE_REPEATED = 0x0201
EXT_NO_POSITION_STARTED = 0x0207
EXT_POSITION_STARTED = 0x0208
EXT_BAD_TAX = 0x0104
EXT_BAD_TAXATION = 0x0103

# --------------------------------------------------------------------------- printing (4C, 87)

#: [C A,K,C] 4C prints one line: ``4C text``, no flags byte.
#: [S C] 87 "print field": ``87 flags printer font multipliers linespacing brightness modeCL
#: modeKL format reserved(2) text``. kkt sends exactly what C's FiscalDevice.addPrintString
#: sends (PrintFieldCommand(0, 1, 0, doubleHeight ? 1 : 0, 0, 0, 1, 1, text)): flags 0, printer
#: 1, font 0, multiplier 0 (normal) or 1 (double height), line spacing 0, brightness 0, both
#: print modes 1 (receipt tape, control tape), format 0, reserved 0. [U] Double width: C has
#: the text size but sends multiplier 0 for it and gives it the same 48 characters
#: (getMaxLenthForText ignores the size), so no source shows its value: it is printed normal.
#: Alignment is done with spaces on a line of PRINT_LINE_WIDTH characters (C's default text
#: length); bold, italic, underline and inverse have no field and are dropped.
PRINT_FIELD_PRINTER = 1
PRINT_NORMAL = 0
PRINT_DOUBLE_HEIGHT = 1
PRINT_MODE_ON = 1
PRINT_LINE_WIDTH = 48

# --------------------------------------------------------------------------- registers (91)
#
# [C A,K,Z] A register read ``91 reg p1 p2`` answers ``55 err value`` — no third byte.

#: [S K] Register 0x12: ``state(1) openedAt(DD MM YY hh mm ss, BCD)`` (K reads 7 bytes, the date
#: in day-month-year order). [U] state values 0 closed, 1 open, 2 over 24 h.
REGISTER_SHIFT_STATE = 0x12
SHIFT_CLOSED = 0
SHIFT_OPEN = 1
SHIFT_EXPIRED = 2

#: [C K,U] Register 0x16: the 14-digit factory serial, 7 bytes BCD on FN models (3F has only its
#: last 8 digits).
REGISTER_SERIAL = 0x16
SERIAL_BYTES = 7

#: [S K] Register 0x28: non-resettable total, 7 bytes BCD kopecks, p1 = receipt type (1 sale).
REGISTER_NON_RESETTABLE = 0x28
TOTALS_BYTES = 7
#: Settlement signs (tag 1054) that bring money in: приход (1) and возврат расхода (4).
INCOME_SIGNS = frozenset({1, 4})
#: 92 receipt types whose non-resettable totals make the device's lifetime income (sale and
#: purchase return, the INCOME_SIGNS).
INCOME_RECEIPT_TYPES = (1, 5)

#: [S Z] Register 0x33, the last sale: ``fd(5 BCD) type(1) total(7 BCD) datetime(DD MM YY hh mm,
#: BCD) fiscalSign(5 BCD) reserved(3)``. The date order is Z's own decoding, not a guess: its
#: RegisterReadResponse declares the field as 5 BCD bytes, and CommandLayer::stateLastSaleResponse
#: reads byte 0 as the day, 1 the month, 2 the year, 3 the hour and 4 the minute, each byte's
#: hex digits as decimal (BCD). Register 0x12's date is in the same day-first order (K).
#: [U] type: the 92 receipt type.
REGISTER_LAST_SALE = 0x33
#: [S C] Register 0x34 (52): the last fiscal document number, 5 bytes; [U] BCD like 0x33's.
REGISTER_LAST_FD = 0x34
#: [S K] Register 0x35, the current shift: ``receipt(3 BCD) shift(3 BCD)``; K takes the number of
#: the receipt just closed from bytes 0..2 and the shift number from bytes 3..5.
REGISTER_SHIFT_DATA = 0x35
#: [S K] Register 0x36: FFD versions (see above), 6 bytes.
REGISTER_FFD = 0x36
#: [S K] Register 0x37 (55): the extended error behind 0xEE, 8 bytes: command code (2 bytes BE),
#: extended code (2 bytes BE), reserved (4).
REGISTER_EXT_ERROR = 0x37

#: [S K] 3F's shift number is the LAST CLOSED shift (K computes the Z-report number as it + 1
#: before 5A); the current one comes from register 0x35 or A4 10. Receipt and shift numbers in
#: 3F are BCD big-endian ([C A,K,Z]; U reads them reversed).
#: 3F fields the sources read differently, which kkt uses for no decision, are read leniently
#: (a byte that is not BCD gives None, never an error), so one odd byte cannot make status()
#: and with it connect() fail: the firmware bytes 15..16 (C reads them as characters, Z's struct
#: says BCD) and the receipt sum 23..27 (K reads BCD, Z a binary integer, C skips it). [U] Which
#: encoding the sum has; settle with 3F during an open receipt on a real device.
#: [U] Byte 22 (receipt state): K masks it with 0x07 (0 closed, 1 open, 3 annulment, other
#: values "other"); C and Z take any value but 0 as "a receipt is open", and so does kkt: an
#: open receipt is never taken for closed because of bits K drops. (The emulator answers the 92
#: receipt type there.) Settle: 3F with a sale return and a correction receipt open.

#: [U] Command 58 (last shift totals): ``55 err income(7 BCD) outcome(7 BCD)`` (A reads income at
#: bytes 2..8, outcome at 9..15). "Last shift" is the open one, else the last closed; income =
#: receipts with a sign in INCOME_SIGNS. Settle with the manual's page on 58.

# --------------------------------------------------------------------------- FN documents (A4)
#
# [C A,K,Z,U] A4 replies are ``55 err data`` — no third byte. Binary numbers are little-endian.
# [S A, S K] Their date-times are binary (A: A4 20's year = byte + 2000; K: A4 32's date through
# a hex-to-decimal helper), one byte per part; [U] for A4 30's and A4 43's.
#
# [C Z,K] A document by number: ``A4 45 fd(4 LE)`` answers ``55 err docType(2 LE) size(2 LE)``,
# then ``A4 46`` answers ``55 err chunk…`` until ``size`` bytes came; the bytes are the
# document's TLVs (K reads the fiscal fields of the receipt just closed this way).
# [U] The TLVs this project reads and writes: 1040 FD number (4 LE), 1012 date-time (UnixTime,
# 4 LE, device local time as UTC), 1038 shift (4 LE), 1042 receipt number (4 LE), 1054 sign (1),
# 1020 total (VLN, LE, kopecks), 1077 fiscal sign (6 bytes; the printed number is the last 4,
# big-endian, as on an FFD document). The chunk length of A4 46 is the device's choice
# (the emulator: DOCUMENT_CHUNK). A4 40 (K names it) has no known reply layout and is not used.
DOCUMENT_CHUNK = 64
TLV_FD_NUMBER = 1040
TLV_DATETIME = 1012
TLV_SHIFT_NUMBER = 1038
TLV_RECEIPT_NUMBER = 1042
TLV_SIGN = 1054
TLV_TOTAL = 1020
TLV_FISCAL_SIGN = 1077
#: Recovery of a receipt whose answer was lost (AtolDriver.receipt_since) reads every document
#: after the FD number the journal kept before sending: a receipt is the job's when its A4 45
#: docType is a receipt's (3, or 31 for a correction: FFD), and its 1054 and 1020 are the job's
#: settlement sign and total ([C] FFD receipt tags, fiscal-rules.md §2-3; their encodings above
#: are [U]). A 92 that opened the shift formed a shift-open report first ([C K]): never taken
#: for the receipt. Register 0x33 ([S Z]) stands in only for a document the FN does not give
#: back. Settle the [U] parts with an A4 45/46 capture of a receipt on a real device.


class DocType(enum.IntEnum):
    """FFD document types (A4 45's docType), plus this project's cash in/out codes."""

    REGISTRATION = 1
    SHIFT_OPEN = 2
    RECEIPT = 3
    SHIFT_CLOSE = 5
    CLOSE_ARCHIVE = 6
    #: "Отчёт о текущем состоянии расчётов" (67 REPORT_SETTLEMENT_STATE).
    CALCULATION_STATE = 21
    CORRECTION = 31
    #: [C] Cash in (49) and cash out (4F) form NO FN document on a real device: the FN's
    #: document types (the FFD list above; javapos FSDocType and pyshtrih, cited in
    #: kktapp/shtrih/model.py DOC_CASH) have none for them, and no ATOL host reads a document
    #: number after them (K processPayout sends 4F and reads nothing back; C addMoneyInOut waits
    #: for 49/4F's own result only). The ATOL emulator forms none either; these two codes are
    #: this project's, for the shared emulator core run with cash documents on (the Shtrih
    #: emulator's setting, Device.cash_documents). The driver never reports an FN document as
    #: a cash operation's result, and recovery decides a lost one by the cash in the drawer
    #: (CASH_DRAWER_SUM_BYTES), never by the FD number.
    CASH_IN = 101
    CASH_OUT = 102


#: [C A,K] The device keeps the cash in its drawer: A reads it with 4D (``4D sum``, BCD up to
#: the end of the reply; ``55 err`` on an error), K with register 0x0A (7 bytes BCD, kopecks; K's
#: payout checks its amount against it first). [U] 4D's width: 7 BCD bytes like 0x0A's. [S K] A
#: Z report may clear it (K's table setting "обнулять сумму в кассе при закрытии смены").
#: No source has counters or sums of cash in/out operations (K reads 0x03/0x06, payments of
#: receipts, only), so the drawer is what tells a lost 49/4F: the owner writes it to the journal
#: before sending, and recovery finds it moved by exactly the amount (done), not at all (not
#: done), or otherwise (unknown, for the operator; AtolDriver.counted_result). [U] that 49 adds
#: and 4F takes exactly its amount: settle with 4D before and after each on a real device.
CASH_DRAWER_SUM_BYTES = 7
#: [S K] Register 0x0A: the cash in the drawer, CASH_DRAWER_SUM_BYTES BCD, kopecks (K reads it
#: before a payout). The driver reads the drawer with 4D; the emulator answers both.
REGISTER_CASH = 0x0A

#: [S Z] A5 (device type) answers ``err(1) proto type model mode(2) major minor build(3 BCD)
#: name…`` (Z's dump ``03 00 00 21 95`` = 3.0.2195). [U] mode(2) is little-endian.
#: [S K] ``9D 91`` answers the internal firmware number: the last two bytes of the reply, BCD
#: (K compares it with 3689 for "unified taxes"). [U] what the bytes before them are.

#: [U] Admin service commands and the mode they need: 6B technological reset in select mode,
#: 71 table initialisation and 77 general clearing in mode 3, all with the shift closed.

#: [U] 95, in conflict: A (atol4j, written to the vendor's protocol manual 3.1 of 2019) names it
#: "повторная печать последнего документа", answered 0xAA when the last document did not close
#: properly; K names 95 "распечатать отложенные Z-отчёты" on its FN models (AtolOnlineFRConstants.h,
#: next to 97 "очистить буфер Z-отчётов"; 0xB5 on older models); C has no copy command at all.
#: So what 95 prints on a current FN device is not settled, and a receipt cut short by paper-out
#: may be the very document A says it refuses (a refusal would hold the queue for ever). The
#: driver sends 95 only when an operator asks for it (AtolDriver.reprint_last); a copy owed after
#: paper ran out is never printed by the service on its own, the operator is told instead
#: (AtolDriver.prints_owed_copy). Settle with the manual's page on 95h, or captures of 95 after a
#: receipt, after a receipt cut short by paper-out, and with Z reports in the device's buffer.
REPRINT_OWED_COPY = False

# --------------------------------------------------------------------------- timeouts

#: [U] Seconds to wait for a task's result. K allows 20 s for 4A and 30 s for a Z report; Z
#: waits 15 s for an async answer ([C K,Z] device timeouts).
DEFAULT_TIMEOUT = 10.0
TIMEOUTS = {
    0x5A: 120.0,  # Z report: prints the report and closes the FN shift; K's Z limit (REPORT_WAIT)
    0x4A: 20.0,  # close receipt: FN signs the document, printer finishes the receipt
    0xE6: 20.0, 0xEB: 20.0,
    0x92: 20.0,  # open receipt: may open the shift (an FN document) first
    0x9A: 20.0,  # open shift: an FN document
    0x49: 20.0, 0x4F: 20.0,  # cash in / out: printed document, may open the shift first
    0x67: 30.0,  # X report printing; the settlement-state report (67 9) prints and signs in the FN
    0x95: 20.0,  # reprint (REPRINT_OWED_COPY)
    0x6B: 20.0, 0x71: 20.0, 0x77: 20.0,  # service commands
    0x91: 10.0,
}
#: Seconds to wait for the synchronous answer to any packet (Add, Ack, Req, Abort).
ANSWER_TIMEOUT = 5.0
#: [U] How often the host re-sends a packet whose answer did not arrive (retransmission).
RETRIES = 2
#: [C K,C] Seconds the driver polls 45 for a report in progress, by the report's command: K
#: waits up to 120 s for a Z report and 30 s for an X report (its Timeouts ZReportNoAnswer and
#: XReportNoAnswer), and keeps polling through polls the device leaves unanswered (its loop
#: retries a failed 45 until the limit); C polls until the mode changes, with no limit.
REPORT_WAIT = {0x5A: 120.0, 0x67: 30.0}
#: [U] Seconds between polls: 0.1, where C and K wait 0.5 s. Each poll is one 45 query, which
#: the device answers while it prints (C and Z poll it then); polling more often only shortens
#: the time between the report's end and the next command, and queries leave the report alone.
REPORT_POLL = 0.1
