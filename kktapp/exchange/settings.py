"""The exchange's settings: which register belongs to which store, its files, the store's VAT.

Read from the ``DEVICES`` entries (``store``, ``main``, ``goods_file``, ``report_file``,
``goods_flag_file``) and the ``EXCHANGE_*`` settings (conf.py). A configuration that cannot work
(two main registers in a store, one file for two registers) is a startup error; a store that
merely has no main register is a warning on the status page, as in the seed's service.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..domain import DomainError, VatRate, general_rate, parse_vat

#: Seconds between looks at the exchange folder (EXCHANGE_POLL_SECONDS).
DEFAULT_POLL_SECONDS = 5.0
#: A goods file without a flag file is read once its size and time have not changed for this long.
DEFAULT_SETTLE_SECONDS = 2.0
#: Code written for a position sold without a catalogue code (EXCHANGE_FALLBACK_CODE).
DEFAULT_FALLBACK_CODE = "999999"


@dataclass(frozen=True)
class Register:
    """One register's part in the exchange."""

    number: int
    name: str
    store: str
    main: bool = False
    goods_file: str = ""
    report_file: str = ""
    #: The empty file 1C writes after the goods file when its "flag file" is set.
    flag_file: str = ""


@dataclass
class Store:
    """A store: its registers, the main one (None when not decided) and the VAT of its goods."""

    name: str
    registers: list[Register] = field(default_factory=list)
    main: Register | None = None
    #: Configured VAT name (EXCHANGE_STORE_VAT) or None = the general rate on the sale date.
    vat: str | None = None
    warning: str = ""

    def vat_rate(self, on: dt.date | None = None) -> VatRate:
        """The rate catalogue goods of this store are sold with."""
        on = on or dt.date.today()
        if self.vat is None:
            return general_rate(on)
        return parse_vat(self.vat, on)


@dataclass
class ExchangeSettings:
    """Everything the exchange needs from the configuration."""

    registers: dict[int, Register] = field(default_factory=dict)
    stores: dict[str, Store] = field(default_factory=dict)
    poll_seconds: float = DEFAULT_POLL_SECONDS
    settle_seconds: float = DEFAULT_SETTLE_SECONDS
    fallback_code: str = DEFAULT_FALLBACK_CODE
    #: Receipts that came through POST /kkt are 1C's own documents: left out unless True.
    include_1c_receipts: bool = False

    @property
    def enabled(self) -> bool:
        """Any register takes part."""
        return bool(self.registers)

    def store_of(self, device: int) -> Store | None:
        """The store a register belongs to, or None when it is not in the exchange."""
        register = self.registers.get(int(device))
        return self.stores.get(register.store) if register else None


def _text(item: Mapping[str, Any], key: str) -> str:
    value = item.get(key)
    return str(value).strip() if value else ""


def load_settings(config: Mapping[str, Any]) -> ExchangeSettings:
    """Build from Flask config; raises ValueError (Russian, naming the setting) on a setup that cannot work."""
    settings = ExchangeSettings(
        poll_seconds=float(config.get("EXCHANGE_POLL_SECONDS") or DEFAULT_POLL_SECONDS),
        settle_seconds=float(config.get("EXCHANGE_SETTLE_SECONDS", DEFAULT_SETTLE_SECONDS)),
        fallback_code=str(config.get("EXCHANGE_FALLBACK_CODE") or DEFAULT_FALLBACK_CODE),
        include_1c_receipts=bool(config.get("EXCHANGE_INCLUDE_1C_RECEIPTS", False)),
    )
    if not settings.fallback_code.isdigit():
        raise ValueError(f"EXCHANGE_FALLBACK_CODE: код товара — число, получено {settings.fallback_code!r}")
    files: dict[str, str] = {}
    for item in config.get("DEVICES") or ():
        if not any(item.get(k) for k in ("store", "goods_file", "report_file")):
            continue
        number = int(item["number"])
        where = f"DEVICES (касса {number})"
        register = Register(
            number=number, name=str(item.get("name") or f"Касса {number}"),
            store=_text(item, "store") or str(item.get("name") or f"Касса {number}"),
            main=bool(item.get("main", False)), goods_file=_text(item, "goods_file"),
            report_file=_text(item, "report_file"), flag_file=_text(item, "goods_flag_file"),
        )
        for key in ("goods_file", "report_file", "flag_file"):
            path = getattr(register, key)
            if path and path in files:
                raise ValueError(f"{where}: файл {path} уже указан у {files[path]}")
            if path:
                files[path] = f"кассы {number}"
        settings.registers[number] = register
        settings.stores.setdefault(register.store, Store(register.store)).registers.append(register)
    vats = config.get("EXCHANGE_STORE_VAT") or {}
    for name, vat in vats.items():
        if name not in settings.stores:
            raise ValueError(f"EXCHANGE_STORE_VAT: магазин {name!r} не указан ни у одной кассы в DEVICES")
        try:
            parse_vat(vat, dt.date.today())
        except DomainError as exc:
            raise ValueError(f"EXCHANGE_STORE_VAT[{name!r}]: {exc.message}") from None
        settings.stores[name].vat = str(vat)
    for store in settings.stores.values():
        mains = [r for r in store.registers if r.main]
        if len(mains) > 1:
            raise ValueError(f"DEVICES: у магазина «{store.name}» несколько основных касс "
                             f"({', '.join(str(r.number) for r in mains)}); основная должна быть одна")
        if mains:
            store.main = mains[0]
        elif len(store.registers) == 1:
            # The seed's rule: a store with a single register has it as its main one.
            store.main = store.registers[0]
        else:
            store.warning = (f"Для магазина «{store.name}» нет основной кассы: товары не загружаются. "
                             "Укажите main: True у одной из касс магазина в DEVICES.")
        if store.main and not store.main.goods_file and any(r.goods_file for r in store.registers):
            store.warning = (f"У основной кассы № {store.main.number} магазина «{store.name}» не указан "
                             "goods_file: товары не загружаются, а файлы товаров других касс удаляются.")
    return settings
