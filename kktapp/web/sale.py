"""Selling from the store catalogue: a receipt item that names a goods code or only a barcode.

The JSON API (``code``) and the compat INCOME (``barcode`` with an empty name) both call
:func:`fill_from_catalogue`, so the rule is written once.
"""

from __future__ import annotations

from typing import Any

from flask import current_app

from kktapp.domain import MEASUREMENT_UNITS
from kktapp.errors import ValidationFailed
from kktapp.exchange import exchange_of

#: Unit (tag 2108) of goods 1C marks as weighed.
KILOGRAM = MEASUREMENT_UNITS["kilogram"]


def fill_from_catalogue(items: list[dict[str, Any]], device: int, prefix: str, *, by_barcode: bool = False,
                        tax_key: str = "tax") -> dict[str, Any] | None:
    """Complete items from the register's store catalogue; returns the job's extra data for the 1C report.

    JSON API items with ``code``, and (``by_barcode``) compat items with an empty name and a
    ``barcode``, take name, price, VAT and the weighed unit from the catalogue; values the
    caller gave explicitly stay. An unknown code or barcode is a 422 naming the item, and so is
    an item without a catalogue price (0) when the caller gave none. Items
    sold by name keep their catalogue code in the report when their barcode is known. None
    when the exchange is not configured (nothing for the report to know).
    """
    exchange = exchange_of(current_app)
    key = "barcode" if by_barcode else "code"
    codes: list[str] = []
    coefficients: list[str] = []
    for i, item in enumerate(items):
        wanted = str(item.get(key) or "").strip()
        required = bool(wanted) and (not by_barcode or not item.get("name"))
        found = exchange.sale_item(device, **{key: wanted}) if wanted and exchange is not None else None
        if found is None:
            if required:
                _unknown(exchange, device, f"{prefix}.{i}.{key}", wanted, by_barcode)
            codes.append("")
            coefficients.append("1")
            continue
        sale, vat = found
        codes.append(sale.code)
        coefficients.append(str(sale.coefficient))
        if not required:
            continue
        if not item.get("name"):
            item["name"] = sale.name
        if item.get("price") is None:
            if not sale.price:
                # 1C left the price empty (0): selling at 0 would be a fiscal document for nothing.
                raise ValidationFailed(f"{prefix}.{i}.price", f"у товара {sale.code} в каталоге нет цены (в 1С "
                                       "цена не задана): укажите цену в запросе или задайте её в 1С", wanted)
            item["price"] = sale.price
        if item.get(tax_key) is None:
            item[tax_key] = vat
        if sale.weighted and not item.get("unit"):
            item["unit"] = KILOGRAM
    if exchange is None:
        return None
    extra: dict[str, Any] = {"codes": codes}
    if any(c != "1" for c in coefficients):
        extra["coefficients"] = coefficients
    return extra


def _unknown(exchange: Any, device: int, field: str, wanted: str, by_barcode: bool) -> None:
    store = exchange.settings.store_of(device) if exchange is not None else None
    if store is None:
        raise ValidationFailed(field, f"у кассы {device} нет каталога товаров (обмен с 1С для неё не настроен)",
                               wanted)
    what = "штрихкодом" if by_barcode else "кодом"
    raise ValidationFailed(field, f"товара с {what} {wanted} нет в каталоге магазина «{store.name}»", wanted)
