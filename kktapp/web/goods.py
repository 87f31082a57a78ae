"""GET /api/v1/goods: the catalogue 1C loads through the goods files (kktapp.exchange).

A route of the JSON API's blueprint (its errors, its OpenAPI description), kept in its own
module: importing this module before the blueprint is registered adds the route.
"""

from __future__ import annotations

from flask import Response, current_app, request

from kktapp.errors import NotFound, ValidationFailed
from kktapp.exchange import exchange_of
from kktapp.web.api import bp, json_response
from kktapp.web.auth import require


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise ValidationFailed(name, f"ожидается целое число от {lo} до {hi}", raw)
    return int(raw)


@bp.get("/goods")
@require("cashier")
def list_goods() -> Response:
    """The store's goods and groups; filters ``q`` (name), ``barcode``, ``code``; ``limit``/``offset``."""
    exchange = exchange_of(current_app)
    if exchange is None:
        raise NotFound("каталога товаров нет: обмен с 1С не настроен (store и goods_file у касс в DEVICES)")
    stores = exchange.settings.stores
    name = (request.args.get("store") or "").strip()
    if not name:
        if len(stores) != 1:
            raise ValidationFailed("store", "укажите магазин: " + ", ".join(sorted(stores)))
        name = next(iter(stores))
    store = stores.get(name)
    if store is None:
        raise NotFound(f"магазин «{name}» не настроен; есть: {', '.join(sorted(stores))}")
    limit = _int_arg("limit", 100, 1, 1000)
    offset = _int_arg("offset", 0, 0, 10**9)
    catalogue = exchange.catalogue
    found, total = catalogue.search(name, q=request.args.get("q", ""), barcode=request.args.get("barcode", ""),
                                    code=request.args.get("code", ""), limit=limit, offset=offset)
    vat = store.vat_rate().value
    return json_response({
        "store": name,
        "total": total,
        "limit": limit,
        "offset": offset,
        "goods": [
            {
                "code": g.code, "name": g.name, "receipt_name": g.receipt_name, "barcode": g.barcode,
                "barcodes": [{"barcode": b.barcode, "name": b.name, "price": b.price,
                              "coefficient": str(b.coefficient)} for b in catalogue.extra_barcodes(name, g.code)],
                "price": g.price, "weighted": g.weighted, "group": g.is_group, "parent": g.parent or None,
                "article": g.article, "vat": None if g.is_group else vat,
            }
            for g in found
        ],
    })
