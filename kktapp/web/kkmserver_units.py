"""KKM Server's view of the registers: routing a command to one, ``Info`` and ``ListUnit`` data.

The registers are kkt's DEVICES; what KKM Server calls ``Info`` comes from a status read (or the
cached snapshot) plus the registration data when the driver reads it (ATOL A4 43: INN, RNM, tax
systems, modes), with conf's ``inn`` of the register as the fallback for the INN. Field names
and formats follow the public clients (kkmserver-api.md §5–6): salesduck/kkmserver-types (ST),
alexanderfefelov/kkmserver-api (AF, whose reader requires every field it names), Muraveiko's
kkmserver.js (MU: OFD_NumErrorDoc is the number of unsent documents, TaxVariant a comma list).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from typing import Any

from flask import current_app

from kktapp import domain, errors
from kktapp.errors import KKTError, ValidationFailed
from kktapp.journal import DONE, FAILED
from kktapp.web.api import normalize_status
from kktapp.web.kkmserver_check import TAX_VARIANT, roubles

log = logging.getLogger(__name__)

#: Prefix of the journal keys of every device job made for a KKM Server command.
KEY_PREFIX = "kkms:"
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


def service() -> Any:
    """The per-process fiscal service."""
    return current_app.extensions["kkt"]


def device_entry(number: int) -> dict:
    """The register's DEVICES entry in conf (``inn``, ``line_length`` are read from it), or {}."""
    for item in current_app.config.get("DEVICES") or []:
        if int(item.get("number", 0)) == number:
            return dict(item)
    return {}


def id_device(number: int) -> str:
    """The register's IdDevice, as List gives it and commands name a register with it [ST List.ts, OpenShift.ts]."""
    return f"kkt-{number}"


def unit_name(number: int) -> str:
    """The register's name as conf gives it."""
    cfg = service().devices.get(number)
    return str(getattr(cfg, "name", "") or f"Касса {number}")


def kkm_date(value: Any, default: str = NO_DATE) -> str:
    """A date or date-time as KKM Server writes it (``2024-01-11T13:10:00``); ``default`` when absent."""
    if value in (None, ""):
        return default
    if isinstance(value, dt.datetime | dt.date):
        value = value.isoformat()
    try:
        return dt.datetime.fromisoformat(str(value)).replace(tzinfo=None).strftime(DATE_FORMAT)
    except ValueError:
        return default


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


def registration_number(number: int, reg: Mapping[str, Any]) -> str:
    """The register's RNM: from the registration data, else from its last status read."""
    info = service().snapshot(number).get("info") or {}
    return str(_pick(reg, "rnm", "registration_number", "reg_number") or info.get("registration_number") or "")


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
        "OFD_DateErrorDoc": kkm_date(fn["first_unsent_at"]),
        "KktNumber": st["serial"],
        "FnNumber": fn["number"],
        "RegNumber": str(_pick(reg, "rnm", "registration_number", "reg_number") or st["registration_number"] or ""),
        "FN_IsFiscal": st["fiscal"],
        "FN_MemOverflowl": bool(fn["warnings"] & FN_MEMORY_FULL),
        "FN_DateEnd": kkm_date(fn["valid_until"]),
        "FFDVersion": str(_pick(reg, "ffd", "ffd_version")),
        "FFDVersionFN": str(_pick(reg, "ffd_fn")),
        "FFDVersionKKT": str(_pick(reg, "ffd_kkt")),
        "OnOff": True,
        "Active": link_ok,
        "SessionState": SESSION_STATE.get(st["shift"]["state"], 1),
        "PaperOver": not st["paper_present"],
        "BalanceCash": roubles(st["totals"]["cash_in_drawer"]),
        "DateTimeKKT": kkm_date(st["datetime"]),
        "Firmware_Version": st["firmware"],
        "Firmware_Status": 0,
        "LicenseExpirationDate": "",
    }


def line_length(number: int) -> int:
    """Characters per printed line: conf ``line_length`` of the register, else KKMSERVER_LINE_LENGTH."""
    value = device_entry(number).get("line_length") or current_app.config.get("KKMSERVER_LINE_LENGTH")
    return int(value or DEFAULT_LINE_LENGTH)


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
    """The register for a command: IdDevice or NumDevice; else KktNumber / InnKkm; else the first up and least busy.

    IdDevice ("" or absent: not given) is the register's id from List [ST OpenShift.ts: "Id
    устройства. Строка. Если = "" то первое не блокированное на сервере"]; an unknown one, or
    one that names another register than a non-zero NumDevice, is "not found" (Status 3).
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
    wanted = str(body.get("IdDevice") if body.get("IdDevice") is not None else "").strip()
    if wanted:
        by_id = {id_device(n): n for n in sorted(svc.devices)}
        found = by_id.get(wanted)
        if found is None:
            raise errors.NotFound(f"ККТ с IdDevice «{wanted[:64]}» не найдена; IdDevice касс сервиса kkt (команда "
                                  f"List): {', '.join(by_id) or 'нет ни одной'}")
        if number and number != found:
            raise errors.NotFound(f"IdDevice «{wanted}» — это ККТ № {found}, а NumDevice = {number}: укажите "
                                  "одно из двух")
        number = found
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
