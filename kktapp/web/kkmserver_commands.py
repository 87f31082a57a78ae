"""The KKM Server commands kkt answers, one handler each.

A handler gets a :class:`Call` (the request body, the register chosen, how long to wait) and
returns the command's own answer fields plus ``Status``/``Error``/``Warning``; the envelope
(Command, IdCommand, NumDevice, UnitName) is added by :mod:`kktapp.web.kkmserver`. Field names
follow the public clients (kkmserver-api.md §5–7): salesduck/kkmserver-types (ST),
alexanderfefelov/kkmserver-api (AF; its reader requires every field it names, so every one is
always present) and DJAlone1992/kkmServerClasses (DJ).

Device work always goes through the service's journal with the key ``kkms:<IdCommand>``: a job
found under the key is waited for, never submitted again, so a repeat or a ``GetRezult`` poll
cannot run a command twice, not even one that failed.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from kktapp import domain, errors
from kktapp.domain import FiscalResult, SettlementType
from kktapp.errors import ValidationFailed
from kktapp.journal import DONE, FAILED, QUEUED, RECEIPT, Job, receipt_from_json
from kktapp.web.api import normalize_status
from kktapp.web.fields import BASE_MESSAGES
from kktapp.web.kkmserver_check import (
    PAYMENT_FIELDS,
    TAX_VARIANT,
    ParsedCheck,
    cashier_params,
    kkm_kopecks,
    kkm_tax,
    parse_print_document,
    parse_register_check,
    roubles,
    rounded_warning,
)
from kktapp.web.kkmserver_units import (
    KEY_PREFIX,
    NO_DATE,
    ROUTING_WAIT,
    id_device,
    kkm_date,
    kkt_info,
    line_length,
    organisation_inn,
    registration,
    registration_number,
    service,
    unit_name,
)
from kktapp.web.schemas import line_params, receipt_fingerprint

log = logging.getLogger(__name__)

SOURCE = "kkmserver"
#: Statuses [C: ST status.ts, AF protocol package]: 0 done, 1 running, 2 error, 3 not found, 4 queued.
OK, RUNNING, ERROR, NOT_FOUND, QUEUED_STATUS = 0, 1, 2, 3, 4
TYPE_DEVICE = "Фискальный регистратор"
ID_TYPE_DEVICE = "kkt-atol"
TEST_MODE_WARNING = "тестовый режим: ничего не фискализировано"


@dataclass
class Call:
    """One command being run: its body, the register it goes to, how long to wait for it."""

    command: str
    body: Mapping[str, Any]
    id_command: str
    device: int
    wait: float
    warnings: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """The journal key of this command's device job."""
        return KEY_PREFIX + self.id_command


@dataclass(frozen=True)
class Spec:
    """A supported command: the role it needs, its handler, whether it is routed to a register.

    ``conf_only`` commands answer from conf and snapshots at once, never touching a device: sent
    without an IdCommand they are not recorded (a page polling List must not fill the registry).
    """

    role: str
    handler: Callable[[Call], dict]
    routed: bool = True
    conf_only: bool = False


# --------------------------------------------------------------------------- jobs


def _keyed(call: Call, kind: str, suffix: str, submit: Callable[[str], Job]) -> Job:
    """The job under the call's key (waited for, never submitted again), else ``submit(key)``."""
    svc = service()
    key = call.key + suffix
    existing = svc.find_job(kind, key)
    if existing is not None:
        return svc.wait_for(existing, call.wait)
    return submit(key)


def run_op(call: Call, op: str, params: dict | None = None, suffix: str = "") -> Job:
    """The command's device operation (``suffix`` tells apart several of one command)."""
    return _keyed(call, op, suffix,
                  lambda key: service().submit(op, params, device=call.device, key=key, wait=call.wait))


def run_receipt(call: Call, receipt: domain.Receipt) -> Job:
    """The command's receipt job."""
    return _keyed(call, RECEIPT, "", lambda key: service().submit_receipt(
        receipt, device=call.device, key=key, fingerprint=receipt_fingerprint(receipt), source=SOURCE,
        wait=call.wait))


def job_status(job: Job) -> dict:
    """Status, Error, Warning (and the numeric ErrorCode) of a job as KKM Server reports them."""
    err = job.error or {}
    if job.state == DONE:
        return {"Status": OK, "Error": "", "Warning": job.reason or ""}
    if job.state == FAILED:
        code = int(err.get("code") or errors.ResultCode.INTERNAL)
        return {"Status": ERROR, "Error": errors.stored_error_text(err), "Warning": "", "ErrorCode": code}
    # Queued: not started yet (4); sending or outcome being settled: running (1).
    return {"Status": QUEUED_STATUS if job.state == QUEUED else RUNNING, "Error": "",
            "Warning": job.reason or ""}


def _result(job: Job) -> FiscalResult | None:
    return job.fiscal_result()


def status_read(call: Call, wait: float | None = None, suffix: str = "") -> Job:
    """A fresh status read of the call's register (keyed like every device job of the call)."""
    return run_op(Call(call.command, call.body, call.id_command, call.device,
                       call.wait if wait is None else wait), "status", suffix=suffix)


# --------------------------------------------------------------------------- fiscal answers


def qr_code(result: FiscalResult, settlement: SettlementType | None) -> str:
    """The FNS receipt QR string ``t=…&s=…&fn=…&i=…&fp=…&n=…`` (shift reports: without s and n, ST)."""
    text = f"t={result.datetime.strftime('%Y%m%dT%H%M')}"
    if settlement is not None:
        text += f"&s={domain.format_rub(result.total)}"
    text += f"&fn={result.fn_number}&i={result.fiscal_document_number}&fp={result.fiscal_sign}"
    if settlement is not None:
        text += f"&n={settlement.tag1054}"
    return text


def receipt_url(number: int, result: FiscalResult, settlement: SettlementType | None) -> str:
    """The buyer's link to the document: conf KKMSERVER_RECEIPT_URL filled in, or "" when not set.

    The link belongs to the shop's OFD (ST's example is ofd.ru's
    ``https://check.ofd.ru/rec/{inn}/{reg_number}/{fn}/{fd}/{fp}``), so it cannot be guessed.
    """
    template = current_app.config.get("KKMSERVER_RECEIPT_URL")
    if not template:
        return ""
    reg = registration(number)
    values = {
        "inn": organisation_inn(number, reg), "reg_number": registration_number(number, reg),
        "fn": result.fn_number, "fd": result.fiscal_document_number, "fp": result.fiscal_sign,
        "t": result.datetime.strftime("%Y%m%dT%H%M"), "s": domain.format_rub(result.total),
        "n": settlement.tag1054 if settlement is not None else 0,
    }
    try:
        return str(template).format(**values)
    except (KeyError, IndexError, ValueError):
        log.error("KKMSERVER_RECEIPT_URL: неверный шаблон %r (допустимо: %s)", template, ", ".join(values))
        return ""


def fiscal_fields(number: int, result: FiscalResult, settlement: SettlementType | None) -> dict:
    """CheckNumber (the FD number, ST: "номер документа"), SessionNumber, URL, QRCode."""
    fields = {"CheckNumber": result.fiscal_document_number, "SessionNumber": result.shift_number}
    if result.test_mode:
        return {**fields, "URL": "", "QRCode": ""}
    return {**fields, "URL": receipt_url(number, result, settlement), "QRCode": qr_code(result, settlement)}


def _fiscal_answer(call: Call, job: Job, settlement: SettlementType | None = None) -> dict:
    answer = job_status(job)
    result = _result(job)
    if result is not None:
        answer.update(fiscal_fields(call.device, result, settlement))
        if result.test_mode:
            call.warnings.append(TEST_MODE_WARNING)
    return answer


# --------------------------------------------------------------------------- handlers


def list_devices(call: Call) -> dict:
    """List: every register from its last known state (no device is touched) [ST List.ts, AF ListUnit]."""
    svc = service()
    units = []
    for number in sorted(svc.devices):
        snap = svc.snapshot(number)
        reg = registration(number, wait=0) if snap.get("link") == "ok" else {}
        info = kkt_info(number, snap, reg, link_ok=snap.get("link") == "ok")
        unit = {
            "NumDevice": number, "IdDevice": id_device(number),
            # ST spells it OnOf, AF reads OnOff: both are given.
            "OnOff": True, "OnOf": True, "Active": info["Active"],
            "TypeDevice": TYPE_DEVICE, "IdTypeDevice": ID_TYPE_DEVICE,
            "Firmware_Version": info["Firmware_Version"], "IP": _address(svc.devices[number].url),
            "NameDevice": unit_name(number), "UnitName": unit_name(number),
            "KktNumber": info["KktNumber"], "FnNumber": info["FnNumber"], "RegNumber": info["RegNumber"],
            "INN": info["InnOrganization"], "NameOrganization": info["NameOrganization"],
            "TaxVariant": info["TaxVariant"], "AddDate": NO_DATE,
            "OFD_Error": info["OFD_Error"], "OFD_NumErrorDoc": info["OFD_NumErrorDoc"],
            "OFD_DateErrorDoc": info["OFD_DateErrorDoc"], "FN_DateEnd": info["FN_DateEnd"],
            "FN_MemOverflowl": info["FN_MemOverflowl"], "FN_IsFiscal": info["FN_IsFiscal"],
            "PaperOver": info["PaperOver"],
        }
        if _matches(unit, call.body):
            units.append(unit)
    return {"Status": OK, "Error": "", "Warning": "", "ListUnit": units}


def _address(url: str) -> str:
    match = re.match(r"^(?:socket|tcp)://\[?([^\]/]+?)\]?:\d+", url)
    return match.group(1) if match else url


def _matches(unit: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    """List's filters: booleans must be equal; dates select units whose date is earlier [ST List.ts]."""
    for name, unit_name_ in (("Active", "Active"), ("OnOff", "OnOff"), ("FN_MemOverflowl", "FN_MemOverflowl"),
                             ("FN_IsFiscal", "FN_IsFiscal")):
        wanted = body.get(name)
        if isinstance(wanted, bool) and unit[unit_name_] != wanted:
            return False
    if isinstance(body.get("OFD_Error"), bool) and bool(unit["OFD_Error"]) != body["OFD_Error"]:
        return False
    for name in ("OFD_DateErrorDoc", "FN_DateEnd"):
        limit = body.get(name)
        # "No date" (0001-01-01) is earlier than any limit, as KKM Server writes it: Muraveiko's client
        # sends 2100-01-01 by default and means "all".
        if isinstance(limit, str) and limit.strip() and not unit[name] < kkm_date(limit, "9999-12-31T23:59:59"):
            return False
    return True


def get_data_kkt(call: Call) -> dict:
    """GetDataKKT: a fresh status read plus the registration data [ST GetDataKKT.ts, AF]."""
    job = status_read(call)
    answer = job_status(job)
    if job.state != DONE:
        return answer
    result = job.result or {}
    reg = registration(call.device)
    info = kkt_info(call.device, result, reg)
    st = normalize_status(call.device, unit_name(call.device), result)
    answer.update({
        "CheckNumber": st["fn"]["last_fd_number"], "SessionNumber": st["shift"]["number"],
        "LineLength": line_length(call.device), "URL": info["UrlOfd"], "Info": info,
    })
    return answer


def _shift(op: str) -> Callable[[Call], dict]:
    def handler(call: Call) -> dict:
        params = cashier_params(call.body, current_app.config, dt.date.today(), call.warnings)
        answer = _fiscal_answer(call, run_op(call, op, params))
        if answer["Status"] == OK:
            # ST gives these answers the register's Info: a status read right after the report
            # (the cached snapshot may not have the new shift yet).
            job = status_read(call, min(call.wait, ROUTING_WAIT), suffix=":info")
            status = job.result if job.state == DONE else service().snapshot(call.device)
            answer["Info"] = kkt_info(call.device, status or {}, registration(call.device, wait=0))
        return answer

    handler.__doc__ = f"{op}: a shift report; the cashier (1021/1203) from CashierName/CashierVATIN or conf."
    return handler


def x_report(call: Call) -> dict:
    """XReport: the shift's counters, no clearing."""
    cashier_params(call.body, current_app.config, dt.date.today(), [])  # checked only: X has no cashier
    return job_status(run_op(call, "x_report"))


def ofd_report(call: Call) -> dict:
    """OfdReport: «отчёт о текущем состоянии расчётов», an FN fiscal document (kkmserver-api.md §5).

    Its answer is the common fields [C: ST, AF]; the document's number (CheckNumber) and the
    shift (SessionNumber) are added as for the shift reports, which clients that read only the
    common fields ignore. It is journalled and settled exactly once like a shift report.
    """
    params = cashier_params(call.body, current_app.config, dt.date.today(), call.warnings)
    job = run_op(call, "settlement_report", params)
    answer = job_status(job)
    result = _result(job)
    if result is not None:
        answer.update({"CheckNumber": result.fiscal_document_number, "SessionNumber": result.shift_number})
    return answer


def _cash(op: str) -> Callable[[Call], dict]:
    def handler(call: Call) -> dict:
        cashier_params(call.body, current_app.config, dt.date.today(), [])  # checked only: not sent with cash
        amount = call.body.get("Amount")
        if amount in (None, ""):
            raise ValidationFailed("Amount", BASE_MESSAGES["required"])
        try:
            kopecks, rounded = kkm_kopecks(amount, "Amount")
        except domain.DomainError as exc:
            raise ValidationFailed("Amount", exc.message, amount if isinstance(amount, int | str) else None) from None
        if kopecks <= 0 or kopecks > domain.MAX_MONEY:
            raise ValidationFailed("Amount", "сумма должна быть больше нуля и не больше 99 999 999,99 ₽",
                                   amount if isinstance(amount, int | str) else str(amount))
        if rounded is not None:
            call.warnings.append(rounded_warning([rounded]))
        return _fiscal_answer(call, run_op(call, op, {"amount": kopecks}))

    handler.__doc__ = f"{op}: Amount in roubles, rounded half-up to kopecks (the Warning says so)."
    return handler


def register_check(call: Call) -> dict:
    """RegisterCheck: a fiscal receipt (every TypeCheck) or, with IsFiscalCheck false, a print."""
    try:
        parsed = parse_register_check(call.body, current_app.config, dt.date.today(), line_length(call.device))
    except ValidationFailed:
        # A poll of a receipt accepted earlier: conf (ACCEPT_LEGACY_VAT, TAXATION…) may have changed
        # since, but the journalled receipt is what was fiscalised and its answer is due.
        existing = service().find_job(RECEIPT, call.key)
        if existing is None:
            raise
        parsed = ParsedCheck(receipt_from_json(existing.payload["receipt"]), [],
                             copies=_count(call.body, "NumberCopies", 10))
    call.warnings.extend(parsed.warnings)
    if parsed.receipt is None:
        return _print_lines(call, parsed)
    receipt = parsed.receipt
    job = run_receipt(call, receipt)
    answer = _fiscal_answer(call, job, receipt.type)
    result = _result(job)
    if result is not None:
        answer["SessionCheckNumber"] = result.receipt_number
        answer.update(payment_fields(receipt))
        _copies(call, parsed.copies, "reprint_last", None)
    return answer


def payment_fields(receipt: domain.Receipt) -> dict:
    """Cash … CashProvision of a receipt in roubles, by KKM Server's payment names."""
    return {name: roubles(sum(p.amount for p in receipt.payments if p.type is kind))
            for name, kind in PAYMENT_FIELDS.items()}


def _copies(call: Call, copies: int, op: str, params: dict | None) -> None:
    """Extra copies (NumberCopies), each its own keyed job so a repeat prints none again."""
    for i in range(1, copies + 1):
        job = run_op(call, op, params, suffix=f":copy{i}")
        if job.state == FAILED:
            call.warnings.append(f"копия {i} не напечатана: {job_status(job)['Error']}")


def _print_lines(call: Call, parsed: ParsedCheck) -> dict:
    job = run_op(call, "print_text", {"lines": line_params(parsed.lines)})
    answer = job_status(job)
    if job.state == DONE:
        _copies(call, parsed.copies, "print_text", {"lines": line_params(parsed.lines)})
    return answer


def print_document(call: Call) -> dict:
    """PrintDocument: a non-fiscal document of PrintText and BarCode strings."""
    parsed = parse_print_document(call.body, current_app.config, dt.date.today(), line_length(call.device))
    call.warnings.extend(parsed.warnings)
    return _print_lines(call, parsed)


def open_cash_drawer(call: Call) -> dict:
    """OpenCashDrawer: the drawer connected to the register."""
    return job_status(run_op(call, "open_drawer"))


def get_line_length(call: Call) -> dict:
    """GetLineLength: characters per line of the register's tape."""
    return {"Status": OK, "Error": "", "Warning": "", "LineLength": line_length(call.device)}


def get_data_check(call: Call) -> dict:
    """GetDataCheck: a receipt from the journal by FD number (0 = the last one), optionally reprinted."""
    number = _count(call.body, "FiscalNumber", 10**10)
    copies = _count(call.body, "NumberCopies", 10)
    job = service().find_receipt(call.device, number or None)
    if job is None:
        what = f"с ФД № {number}" if number else "ни одного"
        raise errors.NotFound(f"чека {what} нет в журнале сервиса kkt для ККТ № {call.device}")
    receipt = receipt_from_json(job.payload["receipt"])
    result = job.fiscal_result()
    assert result is not None
    slip = slip_lines(call.device, receipt, result)
    answer = {"Status": OK, "Error": "", "Warning": "", "Slip": "\n".join(slip),
              **fiscal_fields(call.device, result, receipt.type),
              "RegisterCheck": _check_data(receipt, result)}
    if copies:
        lines = [domain.TextLine("КОПИЯ", bold=True, align="center")] + [domain.TextLine(t) for t in slip]
        _copies(call, copies, "print_text", {"lines": line_params(lines)})
    return answer


def _count(body: Mapping[str, Any], name: str, top: int) -> int:
    """A whole number 0..top, also written as a string (kkmserver-js types NumberCopies as string)."""
    value = body.get(name) or 0
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise ValidationFailed(name, f"ожидается целое число от 0 до {top}", str(value))
    return value


def _check_data(receipt: domain.Receipt, result: FiscalResult) -> dict:
    variant = {int(v): k for k, v in TAX_VARIANT.items()}.get(int(receipt.taxation)) if receipt.taxation else None
    return {
        "FiscalNumber": str(result.fiscal_document_number),
        "FiscalDate": kkm_date(result.datetime),
        "CheckType": receipt.type.title,
        "FiscalSign": result.fiscal_sign,
        "CashierName": receipt.cashier_name,
        "CashierVATIN": receipt.cashier_inn,
        "TaxVariant": "" if variant is None else variant,
        "ClientAddress": receipt.customer_contact,
        "SenderEmail": "",
        "PlaceMarket": receipt.settlement_place,
        "Register": [{"Name": p.name, "Quantity": p.quantity, "Price": roubles(p.price), "Amount": roubles(p.amount),
                      "Tax": kkm_tax(p.vat)} for p in receipt.positions],
        **payment_fields(receipt),
        "AllSumm": roubles(receipt.total),
    }


def slip_lines(number: int, receipt: domain.Receipt, result: FiscalResult) -> list[str]:
    """The receipt as text lines of the register's width (for Slip and printed copies)."""
    width = line_length(number)

    def pair(left: str, right: str) -> str:
        room = max(1, width - len(right) - 1)
        return f"{left[:room]:<{room}} {right}"

    lines = ["КАССОВЫЙ ЧЕК".center(width).rstrip(), receipt.type.title.upper().center(width).rstrip()]
    for p in receipt.positions:
        lines.append(p.name[:width])
        lines.append(pair(f"  {p.quantity.normalize():f} x {domain.format_rub(p.price)}",
                          f"={domain.format_rub(p.amount)}"))
        lines.append(f"  {p.vat.title}")
    lines.append(pair("ИТОГ", f"={domain.format_rub(receipt.total)}"))
    for pay in receipt.payments:
        lines.append(pair(_PAYMENT_TITLES[pay.type], f"={domain.format_rub(pay.amount)}"))
    if receipt.cashier_name:
        lines.append(pair("Кассир", receipt.cashier_name))
    lines.append(pair("Смена", str(result.shift_number)))
    lines.append(pair("Чек", str(result.receipt_number)))
    lines.append(pair("Дата", result.datetime.strftime("%d.%m.%Y %H:%M")))
    lines.append(pair("ФН", result.fn_number))
    lines.append(pair("ФД", str(result.fiscal_document_number)))
    lines.append(pair("ФП", result.fiscal_sign))
    return lines


_PAYMENT_TITLES = {
    domain.PaymentType.CASH: "НАЛИЧНЫМИ", domain.PaymentType.ELECTRONIC: "БЕЗНАЛИЧНЫМИ",
    domain.PaymentType.PREPAID: "ПРЕДОПЛАТА (АВАНС)", domain.PaymentType.CREDIT: "ПОСТОПЛАТА (КРЕДИТ)",
    domain.PaymentType.OTHER: "ВСТРЕЧНОЕ ПРЕДОСТАВЛЕНИЕ",
}

COMMANDS: dict[str, Spec] = {
    "List": Spec("cashier", list_devices, routed=False, conf_only=True),
    "GetDataKKT": Spec("cashier", get_data_kkt),
    "OpenShift": Spec("cashier", _shift("open_shift")),
    "CloseShift": Spec("admin", _shift("close_shift")),
    "ZReport": Spec("admin", _shift("close_shift")),
    "XReport": Spec("admin", x_report),
    # A report like XReport (kkt's reports need an admin), though it forms an FN document.
    "OfdReport": Spec("admin", ofd_report),
    "DepositingCash": Spec("cashier", _cash("cash_in")),
    "PaymentCash": Spec("cashier", _cash("cash_out")),
    "RegisterCheck": Spec("cashier", register_check),
    "GetDataCheck": Spec("cashier", get_data_check),
    "PrintDocument": Spec("cashier", print_document),
    "OpenCashDrawer": Spec("cashier", open_cash_drawer),
    "GetLineLength": Spec("cashier", get_line_length, conf_only=True),
}
#: Case-insensitive lookup: some hand-written clients vary the case of command names.
BY_LOWER = {name.lower(): name for name in COMMANDS}

