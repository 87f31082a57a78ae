"""The KKM Server commands kkt answers, one handler each, and the routing of a command to a register.

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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from kktapp import domain, errors
from kktapp.domain import FiscalResult, SettlementType
from kktapp.errors import KKTError, ValidationFailed
from kktapp.journal import DONE, FAILED, QUEUED, RECEIPT, Job, receipt_from_json
from kktapp.web.api import normalize_status
from kktapp.web.kkmserver_check import (
    PAYMENT_FIELDS,
    TAX_VARIANT,
    ParsedCheck,
    cashier_params,
    kkm_tax,
    parse_print_document,
    parse_register_check,
    roubles,
)
from kktapp.web.schemas import line_params, receipt_fingerprint

log = logging.getLogger(__name__)

KEY_PREFIX = "kkms:"
SOURCE = "kkmserver"
#: Statuses [C: ST status.ts, AF protocol package]: 0 done, 1 running, 2 error, 3 not found, 4 queued.
OK, RUNNING, ERROR, NOT_FOUND, QUEUED_STATUS = 0, 1, 2, 3, 4
#: KKM Server's way of writing "no date" (ST List.ts example).
NO_DATE = "0001-01-01T00:00:00"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
#: SessionState [C: ST SessionState.ts, AF, KJ]: 1 closed, 2 open, 3 open for more than 24 hours.
SESSION_STATE = {"closed": 1, "open": 2, "expired": 3}
#: FN warning bit "memory 99 % full" (FN status, byte of warnings).
FN_MEMORY_FULL = 0x04
#: Seconds a register's registration data (INN, OFD) is reused before it is read again.
REGISTRATION_TTL = 600.0
#: Longest wait for reads made only to route a command (serial number, registration).
ROUTING_WAIT = 5.0
DEFAULT_LINE_LENGTH = 48
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
    """A supported command: the role it needs, its handler, whether it is routed to a register."""

    role: str
    handler: Callable[[Call], dict]
    routed: bool = True


def service() -> Any:
    """The per-process fiscal service."""
    return current_app.extensions["kkt"]


def device_entry(number: int) -> dict:
    """The register's DEVICES entry in conf (``inn``, ``line_length`` are read from it), or {}."""
    for item in current_app.config.get("DEVICES") or []:
        if int(item.get("number", 0)) == number:
            return dict(item)
    return {}


def unit_name(number: int) -> str:
    """The register's name as conf gives it."""
    cfg = service().devices.get(number)
    return str(getattr(cfg, "name", "") or f"Касса {number}")


def _date(value: Any, default: str = NO_DATE) -> str:
    if value in (None, ""):
        return default
    if isinstance(value, dt.datetime | dt.date):
        value = value.isoformat()
    try:
        return dt.datetime.fromisoformat(str(value)).replace(tzinfo=None).strftime(DATE_FORMAT)
    except ValueError:
        return default


# --------------------------------------------------------------------------- jobs


def run_op(call: Call, op: str, params: dict | None = None, suffix: str = "") -> Job:
    """The command's device operation: the job already under its key, else a new one."""
    svc = service()
    key = call.key + suffix
    existing = svc.find_job(op, key)
    if existing is not None:
        return svc.wait_for(existing, call.wait)
    return svc.submit(op, params, device=call.device, key=key, wait=call.wait)


def run_receipt(call: Call, receipt: domain.Receipt) -> Job:
    """The command's receipt job: the one already under its key, else a new one."""
    svc = service()
    existing = svc.find_job(RECEIPT, call.key)
    if existing is not None:
        return svc.wait_for(existing, call.wait)
    return svc.submit_receipt(receipt, device=call.device, key=call.key, fingerprint=receipt_fingerprint(receipt),
                              source=SOURCE, wait=call.wait)


def job_status(job: Job) -> dict:
    """Status, Error, Warning (and the numeric ErrorCode) of a job as KKM Server reports them."""
    err = job.error or {}
    if job.state == DONE:
        return {"Status": OK, "Error": "", "Warning": job.reason or ""}
    if job.state == FAILED:
        message = str(err.get("message") or KKTError.message)
        step = err.get("step")
        if step and str(step) not in message:
            message = f"{message} (шаг: {step})"
        code = int(err.get("code") or errors.ResultCode.INTERNAL)
        return {"Status": ERROR, "Error": message, "Warning": "", "ErrorCode": code}
    # Queued: not started yet (4); sending or outcome being settled: running (1).
    return {"Status": QUEUED_STATUS if job.state == QUEUED else RUNNING, "Error": "",
            "Warning": job.reason or ""}


def _result(job: Job) -> FiscalResult | None:
    return job.fiscal_result()


# --------------------------------------------------------------------------- registration and status


def registration(number: int, wait: float = ROUTING_WAIT) -> dict:
    """The register's registration data when its driver offers it (ATOL A4 43); {} otherwise.

    One read per register per REGISTRATION_TTL across all processes: the job's key names the
    period, so every caller in it finds the same job (and its result) in the journal.
    """
    svc = service()
    key = f"{KEY_PREFIX}registration:{number}:{int(time.time() // REGISTRATION_TTL)}"
    try:
        job = svc.find_job("registration", key)
        if job is None or job.state == FAILED:
            job = svc.submit("registration", device=number, key=key, wait=wait)
        elif job.state != DONE and wait:
            job = svc.wait_for(job, wait)
    except KKTError as exc:
        log.info("KKM Server: регистрационные данные ККТ %d не прочитаны: %s", number, exc.message)
        return {}
    return dict(job.result or {}) if job.state == DONE else {}


def _pick(data: Mapping[str, Any], *names: str) -> Any:
    """The first non-empty of several names a driver may give a registration field."""
    for name in names:
        value = data.get(name)
        if value not in (None, ""):
            return value
    return ""


def organisation_inn(number: int, reg: Mapping[str, Any] | None = None) -> str:
    """The organisation's INN: from the registration data if the driver gives it, else conf ``inn``."""
    reg = registration(number) if reg is None else reg
    return str(_pick(reg, "inn", "organization_inn", "user_inn") or device_entry(number).get("inn") or "").strip()


#: Bits of the registration's "режимы работы" byte (A4 43 byte 40) [U: FFD order, to be checked
#: on a device]: encryption, offline, automatic, services, BSO, internet.
MODE_BITS = {"encryption": 0x01, "offline": 0x02, "automatic": 0x04, "service": 0x08, "bso": 0x10, "internet": 0x20}


def registration_modes(value: Any) -> dict[str, bool]:
    """The registration's modes as names → flags, from a bit mask or a mapping."""
    if isinstance(value, Mapping):
        return {name: bool(value.get(name)) for name in MODE_BITS}
    bits = value if isinstance(value, int) and not isinstance(value, bool) else 0
    return {name: bool(bits & bit) for name, bit in MODE_BITS.items()}


def tax_bits(reg: Mapping[str, Any]) -> int:
    """The registered tax systems as tag 1055 bits (0: not known), from bits or names."""
    value = _pick(reg, "taxation", "tax_systems", "taxation_systems")
    bits = 0
    if isinstance(value, int) and not isinstance(value, bool):
        bits = value
    elif isinstance(value, list | tuple):
        for item in value:
            bits |= int(item) if str(item).isdigit() else int(domain.TAXATION_NAMES.get(str(item), 0))
    return bits


def tax_variants(reg: Mapping[str, Any]) -> str:
    """TaxVariant as KKM Server writes it ("0,1"): the registered systems in its numbering."""
    bits = tax_bits(reg)
    return ",".join(str(k) for k, system in sorted(TAX_VARIANT.items()) if bits & int(system))


def status_read(call: Call, wait: float | None = None, suffix: str = "") -> Job:
    """A fresh status read of the call's register (keyed like every device job of the call)."""
    return run_op(Call(call.command, call.body, call.id_command, call.device,
                       call.wait if wait is None else wait), "status", suffix=suffix)


def kkt_info(number: int, status: Mapping[str, Any], reg: Mapping[str, Any], link_ok: bool = True) -> dict:
    """GetDataKKT's ``Info`` from a status read (or snapshot) and the registration data [ST, AF]."""
    st = normalize_status(number, unit_name(number), dict(status))
    fn = st["fn"]
    modes = registration_modes(reg.get("modes"))
    unsent = fn["unsent_count"]
    return {
        "InnOrganization": organisation_inn(number, reg),
        "NameOrganization": str(_pick(reg, "organization_name", "user_name", "name")),
        "TaxVariant": tax_variants(reg),
        "AddressSettle": str(_pick(reg, "address", "settlement_address")),
        "PlaceSettle": str(_pick(reg, "place", "settlement_place")),
        "SenderEmail": str(_pick(reg, "sender_email", "email")),
        "EncryptionMode": bool(modes.get("encryption")),
        "OfflineMode": bool(modes.get("offline")),
        "AutomaticMode": bool(modes.get("automatic")),
        "InternetMode": bool(modes.get("internet")),
        "BSOMode": bool(modes.get("bso")),
        "ServiceMode": bool(modes.get("service")),
        "UrlServerOfd": str(_pick(reg, "ofd_host", "ofd_url", "ofd_address")),
        "PortServerOfd": str(_pick(reg, "ofd_port")),
        "NameOFD": str(_pick(reg, "ofd_name")),
        "UrlOfd": str(_pick(reg, "ofd_site", "fns_site")),
        "InnOfd": str(_pick(reg, "ofd_inn")),
        "OFD_Error": f"не отправлено в ОФД документов: {unsent}" if unsent else "",
        "OFD_NumErrorDoc": unsent,
        "OFD_DateErrorDoc": _date(fn["first_unsent_at"]),
        "KktNumber": st["serial"],
        "FnNumber": fn["number"],
        "RegNumber": str(_pick(reg, "rnm", "registration_number", "reg_number") or st["registration_number"] or ""),
        "FN_IsFiscal": st["fiscal"],
        "FN_MemOverflowl": bool(fn["warnings"] & FN_MEMORY_FULL),
        "FN_DateEnd": _date(fn["valid_until"]),
        "FFDVersion": str(_pick(reg, "ffd", "ffd_version")),
        "FFDVersionFN": str(_pick(reg, "ffd_fn")),
        "FFDVersionKKT": str(_pick(reg, "ffd_kkt")),
        "OnOff": True,
        "Active": link_ok,
        "SessionState": SESSION_STATE.get(st["shift"]["state"], 1),
        "PaperOver": not st["paper_present"],
        "BalanceCash": roubles(st["totals"]["cash_in_drawer"]),
        "DateTimeKKT": _date(st["datetime"]),
        "Firmware_Version": st["firmware"],
        "Firmware_Status": 0,
        "LicenseExpirationDate": "",
    }


def line_length(number: int) -> int:
    """Characters per printed line: conf ``line_length`` of the register, else KKMSERVER_LINE_LENGTH."""
    value = device_entry(number).get("line_length") or current_app.config.get("KKMSERVER_LINE_LENGTH")
    return int(value or DEFAULT_LINE_LENGTH)


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
    snap = service().snapshot(number)
    values = {
        "inn": organisation_inn(number, reg),
        "reg_number": str(_pick(reg, "rnm", "registration_number", "reg_number")
                          or (snap.get("info") or {}).get("registration_number") or ""),
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
            "NumDevice": number, "IdDevice": f"kkt-{number}",
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
        if isinstance(limit, str) and limit.strip() and not unit[name] < _date(limit, "9999-12-31T23:59:59"):
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
        params = cashier_params(call.body, current_app.config, dt.date.today())
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
    cashier_params(call.body, current_app.config, dt.date.today())
    return job_status(run_op(call, "x_report"))


def _cash(op: str) -> Callable[[Call], dict]:
    def handler(call: Call) -> dict:
        cashier_params(call.body, current_app.config, dt.date.today())
        amount = call.body.get("Amount")
        try:
            kopecks = domain.to_kopecks(amount, "Amount")
        except domain.DomainError as exc:
            raise ValidationFailed("Amount", exc.message, amount if isinstance(amount, int | str) else None) from None
        if kopecks <= 0 or kopecks > domain.MAX_MONEY:
            raise ValidationFailed("Amount", "сумма должна быть больше нуля и не больше 99 999 999,99 ₽",
                                   amount if isinstance(amount, int | str) else str(amount))
        return _fiscal_answer(call, run_op(call, op, {"amount": kopecks}))

    handler.__doc__ = f"{op}: Amount in roubles (two decimals at most)."
    return handler


def register_check(call: Call) -> dict:
    """RegisterCheck: a fiscal receipt (every TypeCheck) or, with IsFiscalCheck false, a print."""
    parsed = parse_register_check(call.body, current_app.config, dt.date.today(), line_length(call.device))
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
        "FiscalDate": _date(result.datetime),
        "CheckType": receipt.type.title,
        "FiscalSign": result.fiscal_sign,
        "CashierName": receipt.cashier_name,
        "CashierVATIN": receipt.cashier_inn,
        "TaxVariant": "" if variant is None else variant,
        "ClientAddress": receipt.customer_contact,
        "SenderEmail": "",
        "PlaceMarket": "",
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
    "List": Spec("cashier", list_devices, routed=False),
    "GetDataKKT": Spec("cashier", get_data_kkt),
    "OpenShift": Spec("cashier", _shift("open_shift")),
    "CloseShift": Spec("admin", _shift("close_shift")),
    "ZReport": Spec("admin", _shift("close_shift")),
    "XReport": Spec("admin", x_report),
    "DepositingCash": Spec("cashier", _cash("cash_in")),
    "PaymentCash": Spec("cashier", _cash("cash_out")),
    "RegisterCheck": Spec("cashier", register_check),
    "GetDataCheck": Spec("cashier", get_data_check),
    "PrintDocument": Spec("cashier", print_document),
    "OpenCashDrawer": Spec("cashier", open_cash_drawer),
    "GetLineLength": Spec("cashier", get_line_length),
}
#: Case-insensitive lookup: some hand-written clients vary the case of command names.
BY_LOWER = {name.lower(): name for name in COMMANDS}


# --------------------------------------------------------------------------- routing


def _serial(number: int) -> str:
    snap = service().snapshot(number)
    serial = (snap.get("info") or {}).get("serial") or (snap.get("status") or {}).get("serial")
    if serial:
        return str(serial)
    job = service().submit("status", device=number, wait=ROUTING_WAIT)
    if job.state == DONE:
        return normalize_status(number, "", job.result or {})["serial"]
    return ""


def route(body: Mapping[str, Any]) -> int:
    """The register for a command: NumDevice; else KktNumber / InnKkm; else the first up and least busy.

    NumDevice 0 (or absent) means "any": among the registers that match KktNumber (factory
    number), InnKkm (organisation INN) and TaxVariant (a registered tax system), the one with the
    fewest jobs waiting, the first of equals, passing over registers known to be down [ST
    request.ts: "Если 0 то первое не блокированное на сервере"]. A command for a register that is
    down still queues there when it is the only match.
    """
    svc = service()
    number = body.get("NumDevice")
    if number in (None, ""):
        number = 0
    if isinstance(number, str) and number.strip().isdigit():
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise ValidationFailed("NumDevice", "номер устройства — целое число (0 — любое)", body.get("NumDevice"))
    kkt_number = str(body.get("KktNumber") or "").strip()
    inn = str(body.get("InnKkm") or "").strip()
    if number:
        if number not in svc.devices:
            raise errors.NotFound(f"ККТ № {number} не настроена в сервисе kkt")
        candidates = [number]
    else:
        candidates = sorted(svc.devices)
    if kkt_number:
        candidates = [n for n in candidates if _serial(n).lstrip("0") == kkt_number.lstrip("0")]
        if not candidates:
            raise errors.NotFound(f"ККТ с заводским номером {kkt_number} не найдена")
    if inn:
        candidates = [n for n in candidates if organisation_inn(n) == inn]
        if not candidates:
            raise errors.NotFound(f"ККТ организации с ИНН {inn} не найдена")
    variant = str(body.get("TaxVariant") if body.get("TaxVariant") is not None else "").strip()
    if not number and variant.isdigit() and int(variant) in TAX_VARIANT:
        # "TaxVariant: СНО для поиска ККТ; "" — любое" [ST request.ts]. A register whose
        # registration is not known is not excluded: the FN itself refuses a system it lacks.
        wanted = int(TAX_VARIANT[int(variant)])
        candidates = [n for n in candidates if not tax_bits(registration(n)) or tax_bits(registration(n)) & wanted]
        if not candidates:
            raise errors.NotFound(f"ККТ с системой налогообложения TaxVariant = {variant} не найдена")
    if not candidates:
        raise errors.NotFound("в сервисе kkt не настроено ни одной ККТ")
    if len(candidates) == 1:
        return candidates[0]

    def load(n: int) -> tuple[int, int, int]:
        snap = svc.snapshot(n)
        busy = sum(snap.get("queue", {}).values())
        # Only a register known to be down is passed over: one whose owner has not reported yet
        # (just started) is as good as up, or the choice would depend on start-up order.
        return (1 if snap.get("link") == "down" else 0, busy, n)

    return min(candidates, key=load)
