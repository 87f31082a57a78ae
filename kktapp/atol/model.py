"""Every choice this project makes where the public ATOL sources are silent: one place, all [U].

The wire facts we are sure of (framing, CRC, escaping, the status and task-buffer codes) live
in :mod:`.framing` and :mod:`.taskbuf`. What follows is the *model* the driver and the
emulator both implement until someone checks it against the vendor manual ("Протокол работы
ККТ, версия 3.1, Руководство программиста") or a real device. Each item says what would
settle it. Change a choice here, then fix whatever the tests show; nothing else in the code
should restate these numbers.
"""

from __future__ import annotations

import enum

# --------------------------------------------------------------------------- identifiers

#: [S] Host packet IDs and task IDs cycle through 0x00..0xDF (atol4j). Whether the device
#: rejects IDs outside that range is [U]; settle with the manual's transport chapter.
ID_MIN = 0x00
ID_MAX = 0xDF
#: [S] The device's unsolicited packets (async results) carry this packet ID.
ASYNC_PACKET_ID = 0xF0

#: [U] How many unfinished tasks the device's buffer holds before it answers B1 (Overflow).
#: Chosen large enough for a 100-position receipt in one write; settle with the manual.
TASK_BUFFER_CAPACITY = 128

# --------------------------------------------------------------------------- task buffer answers
#
# [U] Synchronous answers. Every host packet gets one answer on the SAME packet ID:
#   Add (C1) / Ack+Add (C5): the task's status byte at that moment, and the command reply
#       when the task is already done:  ``A1`` | ``A2`` | ``A3 reply…`` | ``A4 reply…`` |
#       ``A5`` (Stopped, see below) | ``B1`` | ``B2`` | ``B4``. No TId: the packet ID ties the
#       answer to its request.
#   Req (C3 TId): the same status and reply at any time, ``B3`` for an unknown TId.
#   Ack (C2 TId): ``A3`` once the kept result is released, ``B3`` for an unknown TId.
#   Abort (C4): ``A3`` once the buffer is empty.
# [U] Asynchronous answers. A task that carries WaitAsyncData and was NOT finished when its
#   Add was answered is reported, when it ends, by a packet with ID 0xF0:
#   ``A6 TId reply…`` (done) or ``A7 TId reply…`` (device error; reply = ``55 err ext``).
#   Tasks without WaitAsyncData are only reported on Req.
# [U] NeedResult keeps a result until Ack; without it the device forgets the result once it
#   has been delivered (synchronously or asynchronously).
# Settle all of the above with the manual's "буфер заданий" chapter or a packet capture.

#: [U] The Stopped rule (adopted model, makes pipelining safe): after a task fails, the device
#: answers every following task with A5 (Stopped) - unless the task carries IgnoreError - until
#: the host sends Ack (C2) for the failed TId or Abort (C4). Stopped tasks are not executed.
STOPPED_UNTIL_ACK_OR_ABORT = True

# --------------------------------------------------------------------------- passwords and modes


class Mode(enum.IntEnum):
    """[S] Device modes (low nibble of the mode byte; sub-mode in the high nibble)."""

    SELECT = 0
    REGISTRATION = 1
    REPORT_X = 2
    REPORT_Z = 3
    PROGRAMMING = 4
    FP_ACCESS = 5
    FN_ACCESS = 6


#: [U] Factory access password (first two BCD bytes of every task).
ACCESS_PASSWORD = 0
#: [U] Factory system administrator password: may enter every mode.
SYSADMIN_PASSWORD = 30
#: [U] Factory cashiers 1..28, each with its own number as password (registration and X only).
CASHIER_PASSWORDS = range(1, 29)
#: [U] Modes a cashier password may enter; the administrator may enter all of them.
CASHIER_MODES = frozenset({Mode.REGISTRATION, Mode.REPORT_X})
#: [S] Error for a wrong mode password (56) or a wrong access password.
WRONG_PASSWORD_ERROR = 0x8C

# --------------------------------------------------------------------------- error codes

#: [U] No public source names a "shift closed" error. This project answers 0x9D for a command
#: that needs an open shift (sell, cash in/out, Z report) when the shift is closed. 0x9D is
#: free in the public error table (0x9C is "shift open"). Settle with the manual's error list.
SHIFT_CLOSED_ERROR = 0x9D
#: [U] Answer to a command code the device does not know (0x7A "model cannot execute").
UNKNOWN_COMMAND_ERROR = 0x7A
#: [S] Answer to a request of the wrong length.
BAD_LENGTH_ERROR = 0x14

# --------------------------------------------------------------------------- positions (E6)

#: [U] The E6 tax byte is the FFD tag 1199 value (:attr:`kktapp.domain.VatRate.tag1199`),
#: 1 = 20 %, ... 11 = 22 %, 12 = 22/122. atol4j leaves the numbering open; the libfptr driver
#: numbering (VAT20 = 7) is NOT used on the wire here. Settle with the manual's E6 page.
E6_TAX_IS_TAG1199 = True
#: [U] E6 position sum = round_half_up(price x quantity), minus discSum when discSign is 0,
#: plus discSum when discSign is 1 (discType 1 = sum in kopecks). The driver sends the price
#: and quantity as given and puts any difference to the position amount into discSum, so the
#: device's sum equals the receipt's amount to the kopeck.
E6_DISCOUNT_ADJUSTS_SUM = True

# --------------------------------------------------------------------------- FFD attributes (E8)
#
# [U] Command E8 "write attribute": ``E8 flags tag(2 LE) len(2 LE) value``, mode 1, receipt
# open (the cashier tags also outside a receipt: DOCUMENT_TAGS below). flags is 0 (reserved).
# Position tags (1030, 1212, 1214, 2108) apply to the position most recently registered with
# E6; receipt tags apply to the open receipt. String values are in the
# device text codec (:func:`kktapp.atol.codec.encode_text`); integer tags are one byte; 1178
# (a date) is 4 bytes LE unix time at 00:00 UTC, as FFD's UnixTime type. The device stores tags
# it does not know without error. When a position tag is not written the device uses the
# default below. Settle with the manual (the command may be named "Записать реквизит").

TAG_CUSTOMER_CONTACT = 1008
TAG_ITEM_NAME = 1030
TAG_CASHIER_NAME = 1021
TAG_CASHIER_INN = 1203
TAG_CORRECTION_TYPE = 1173
TAG_CORRECTION_DATE = 1178
TAG_CORRECTION_ORDER = 1179
TAG_PAYMENT_OBJECT = 1212
TAG_PAYMENT_METHOD = 1214
TAG_UNIT = 2108

#: Position tags and the value the device assumes when the host does not write them.
POSITION_TAG_DEFAULTS = {TAG_PAYMENT_METHOD: 4, TAG_PAYMENT_OBJECT: 1, TAG_UNIT: 0}

#: [U] Names longer than E6 carries. E6 has room for 64 bytes of name
#: (:data:`kktapp.atol.commands.POSITION_NAME_BYTES`, [S]), FFD tag 1030 allows 128 characters
#: and the 1C contract accepts 128. When the name does not fit, the host sends the first 64
#: bytes in E6 and then, as the very next task, the whole name as tag 1030 with E8 (position
#: scope, like 1212/1214/2108: it applies to the position just registered). The device puts
#: the full 1030 value into the document (FN, print, OFD) instead of the cut E6 name. A name
#: that fits is sent in E6 only. Settle with the manual (real firmware may take longer names
#: in E6 itself, or want 1030 before E6).
LONG_NAME_BY_TAG1030 = True
#: [C] Positions in one receipt: the FN holds one document in 32,768 bytes, "roughly 250
#: positions" (fiscal-rules.md §3). [U] 250 is taken as the limit; a receipt of long names may
#: still be refused by the FN at closing, which is a clean device error (nothing formed).
MAX_POSITIONS = 250
#: Receipt-level tags.
RECEIPT_TAGS = frozenset({
    TAG_CUSTOMER_CONTACT, TAG_CASHIER_NAME, TAG_CASHIER_INN,
    TAG_CORRECTION_TYPE, TAG_CORRECTION_DATE, TAG_CORRECTION_ORDER,
})
STRING_TAGS = frozenset({TAG_CUSTOMER_CONTACT, TAG_ITEM_NAME, TAG_CASHIER_NAME, TAG_CASHIER_INN,
                         TAG_CORRECTION_ORDER})
BYTE_TAGS = frozenset({TAG_PAYMENT_OBJECT, TAG_PAYMENT_METHOD, TAG_UNIT, TAG_CORRECTION_TYPE})
UNIXTIME_TAGS = frozenset({TAG_CORRECTION_DATE})

#: [U] The cashier on shift reports. FFD puts the cashier (1021, 1203) into the shift-open
#: and shift-close reports too, and 9A / 5A have no room for it. So E8 is also accepted with
#: no receipt open, in registration mode (before 9A) and in mode 3 (before 5A), for these
#: tags only: the device keeps them for the next fiscal document it forms in that mode (shift
#: report, or a receipt opened next, cash in/out) and forgets them when that document is
#: formed, when the mode is left (48) or at power-off. Other tags with no receipt open are
#: refused with 0x9A (receipt closed). E8's mode is therefore checked by the device, not by
#: the command table. Settle with the manual (real firmware may take the cashier from the
#: cashier table, or from "Записать реквизит" only inside a document).
DOCUMENT_TAGS = frozenset({TAG_CASHIER_NAME, TAG_CASHIER_INN})
ATTRIBUTE_MODES = frozenset({Mode.REGISTRATION, Mode.REPORT_Z})

# --------------------------------------------------------------------------- print string (4C)

#: [U] 4C carries the print attributes in one flags byte before the text:
#: ``4C flags text…``. Bits below; bits 6-7 are the alignment (0 left, 1 centre, 2 right).
#: The public sources show only ``4C text``; settle with the manual (real devices probably
#: take the font from a settings table instead).
PRINT_BOLD = 0x01
PRINT_ITALIC = 0x02
PRINT_INVERSE = 0x04
PRINT_UNDERLINE = 0x08
PRINT_DOUBLE_WIDTH = 0x10
PRINT_DOUBLE_HEIGHT = 0x20
PRINT_ALIGN_SHIFT = 6
PRINT_ALIGN = {"left": 0, "center": 1, "right": 2}

# --------------------------------------------------------------------------- registers (91)

#: [U] Register 18 (0x12) read with ``91 12 00 00`` answers
#: ``55 00 00 state(1) openedAt(YY MM DD hh mm ss, BCD)``; openedAt is all zeros when closed.
#: (Unact names register 18 "shift-open flag"; the layout is ours.)
REGISTER_SHIFT_STATE = 0x12
SHIFT_CLOSED = 0
SHIFT_OPEN = 1
SHIFT_EXPIRED = 2

#: [U] Register 22 (0x16) read with ``91 16 00 00`` answers ``55 00 00 serial(7 BCD)``: the
#: device's whole 14-digit factory serial ("00106201273705"), where 3F only has room for its
#: last 8 digits (4 BCD bytes). Unact names register 22 "serial number"
#: (atol-protocol.md §2.2); the reply layout is ours, chosen to fit the 14 digits ATOL prints.
#: A device that refuses the register leaves the host with 3F's 8 digits. Settle with the
#: manual's register table (91) or one read from a real device.
REGISTER_SERIAL = 0x16
SERIAL_BYTES = 7

# --------------------------------------------------------------------------- earnings (58, 91)

#: [U] Command 58 "last shift totals" (atol-protocol.md §2.2: ``→ 55 err income(7 BCD)
#: outcome(7 BCD)``) answers with the standard head, ``55 00 00 income outcome`` (the table's
#: ``55 err`` is read as the usual shorthand that drops ext, as for A4 40 below). "Last shift"
#: is the current shift while one is open and the last closed one otherwise (as 3F's shift
#: number); zeros before the first shift. income = the totals of the shift's receipts whose
#: settlement sign (tag 1054) is in INCOME_SIGNS, outcome = those of the other signs;
#: test-mode receipts count nothing, corrections count by their sign. Settle with the
#: manual's page on 58.
#: [U] Register 12 (``91 0C 00 00``) answers the same two fields over the device's whole
#: life: the non-resettable totals ("необнуляемая сумма"), which neither the Z report nor
#: general clearing (77) clears. The number is ours: Unact's register list names 3, 17, 18,
#: 22, 27, 47, 51 and 55 only. Settle with the manual's register table (91).
REGISTER_NON_RESETTABLE = 0x0C
#: Width of the income and outcome fields (BCD, kopecks).
TOTALS_BYTES = 7
#: [U] Settlement signs (tag 1054) that bring money in: приход (1) and возврат расхода (4);
#: возврат прихода (2) and расход (3) pay it out. The emulator's cash control uses the same.
INCOME_SIGNS = frozenset({1, 4})

#: [U] 3F's shift number: the current shift while one is open, the last closed one otherwise.
#: Receipt and shift numbers in 3F are BCD big-endian (atol4j; Unact reads them reversed).

# --------------------------------------------------------------------------- FN document (A4 40)

#: [U] "FN document by number": ``A4 40 fdNumber(4 LE)`` answers ``55 00 00 docType(1)
#: fdNumber(4 LE) fiscalSign(4 LE) datetime(YY MM DD hh mm, BCD) shiftNo(2 LE) receiptNo(2 LE)
#: receiptType(1) total(5 LE)``; error 0xDA (no such data) for a number the FN does not hold.
#: Recovery uses it to rebuild the FiscalResult of a document whose answer was lost. The
#: standard ``55 err ext`` head is used (the brief's ``55 00 docType`` dropped the ext byte).
#: receiptType is the tag 1054 value (1 приход, 2 возврат прихода, 3 расход, 4 возврат
#: расхода), 0 for documents that are not receipts. Date-times in A4 replies are BCD here.
#: Settle with the manual's "запрос документа ФН по номеру" and the FN protocol.
FN_DOCUMENT_SUBCODE = 0x40


class DocType(enum.IntEnum):
    """Document types in A4 40 (FFD numbering, plus this project's cash in/out codes)."""

    REGISTRATION = 1
    SHIFT_OPEN = 2
    RECEIPT = 3
    SHIFT_CLOSE = 5
    CLOSE_ARCHIVE = 6
    CALCULATION_STATE = 21
    CORRECTION = 31
    #: [U] In this model cash in and cash out are numbered FN documents (the emulator logs
    #: them as documents). Real FNs do not register them; settle with a real device.
    CASH_IN = 101
    CASH_OUT = 102


#: [U] 4D (cash in drawer) answers ``4D sum(7 BCD)``; errors as ``55 err ext``.
CASH_DRAWER_SUM_BYTES = 7

#: [U] A5 (device type) answers ``00 proto type model mode(2) major minor patch build(2 LE) name…``:
#: first byte is the error code (atol4j; Dokshin reads it as the protocol). Errors ``55 err ext``.

#: [U] Admin service commands and the mode they need: 6B technological reset in select mode,
#: 71 table initialisation and 77 general clearing in mode 3, all with the shift closed.
#: Settle with the manual's service-commands chapter.

# --------------------------------------------------------------------------- timeouts

#: [U] Seconds to wait for a task's result. No v3 timeouts are published; the v2 T5 table is
#: the upper bound, shortened where a network device has no reason to be slow.
DEFAULT_TIMEOUT = 10.0
TIMEOUTS = {
    0x5A: 40.0,  # Z report: prints the report and closes the FN shift
    0x4A: 20.0,  # close receipt: FN signs the document, printer finishes the receipt
    0xE6: 20.0,  # v2 says 50 s; a position is a memory operation on v3 devices
    0x9A: 20.0,  # open shift: an FN document
    0x49: 20.0, 0x4F: 20.0,  # cash in / out: printed document
    0x67: 30.0,  # X report printing
    0x95: 20.0,  # reprint
    0x6B: 20.0, 0x71: 20.0, 0x77: 20.0,  # service commands
    0x91: 10.0,  # v2 says 45 s for registers; that is the serial link talking
}
#: Seconds to wait for the synchronous answer to any packet (Add, Ack, Req, Abort).
ANSWER_TIMEOUT = 5.0
#: [U] How often the host re-sends a packet whose answer did not arrive (retransmission).
RETRIES = 2
