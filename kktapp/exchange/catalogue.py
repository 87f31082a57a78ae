"""The goods catalogue of each store, as loaded from the main register's goods file.

Stored in the exchange's SQLite file (:mod:`.db`), so every process sells from the same
catalogue and it survives restarts. A load is one transaction: a goods file either changes the
catalogue completely or not at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from .db import ExchangeDb
from .goods import ExtraBarcode, Goods, GoodsFile, GoodsFileError

#: Most rows GET /api/v1/goods returns at once.
MAX_LIMIT = 1000


@dataclass(frozen=True)
class SaleItem:
    """What a receipt position takes from the catalogue: a goods item, or a package of it."""

    code: str
    name: str
    #: Kopecks per unit sold (per package when sold by a package barcode).
    price: int
    weighted: bool
    #: Base units in one unit sold (a package barcode's coefficient, else 1).
    coefficient: Decimal = Decimal(1)


@dataclass(frozen=True)
class AppliedFile:
    """A goods file by content: the same path, size and SHA-256 is the same file."""

    path: str
    size: int
    sha256: str
    #: What loading it did, as the status page says it (Russian).
    summary: str = ""

    def same_file(self, other: AppliedFile | None) -> bool:
        """Whether ``other`` is this file (the summary does not count)."""
        return other is not None and (self.path, self.size, self.sha256) == (other.path, other.size, other.sha256)


def _goods(row: object) -> Goods:
    return Goods(
        code=row["code"], name=row["name"], short_name=row["short_name"], barcode=row["barcode"],  # type: ignore[index]
        price=row["price"], weighted=bool(row["weighted"]), is_group=bool(row["is_group"]),  # type: ignore[index]
        parent=row["parent"], article=row["article"],  # type: ignore[index]
    )


class Catalogue:
    """Goods and barcodes per store."""

    def __init__(self, db: ExchangeDb) -> None:
        self.db = db

    def load(self, store: str, parsed: GoodsFile, path: str, applied: AppliedFile | None = None) -> None:
        """Apply a parsed goods file: ``$$$CLR`` replaces the store's goods, ``$$$ADD`` merges.

        An extra barcode of a code that is neither in the file nor (for ``$$$ADD``) in the
        catalogue raises :class:`GoodsFileError` and nothing is changed. ``applied`` (the file's
        identity) is recorded in the same transaction: the catalogue has taken the file in if
        and only if :meth:`applied` says so.
        """
        with self.db.transaction() as conn:
            if parsed.replace:
                conn.execute("DELETE FROM goods WHERE store=?", (store,))
                conn.execute("DELETE FROM barcodes WHERE store=?", (store,))
            conn.executemany(
                "INSERT INTO goods (store, code, name, short_name, barcode, price, weighted, is_group, parent, article)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(store, code) DO UPDATE SET name=excluded.name,"
                " short_name=excluded.short_name, barcode=excluded.barcode, price=excluded.price,"
                " weighted=excluded.weighted, is_group=excluded.is_group, parent=excluded.parent,"
                " article=excluded.article",
                [(store, g.code, g.name, g.short_name, g.barcode, g.price, int(g.weighted), int(g.is_group), g.parent,
                  g.article) for g in parsed.goods],
            )
            for extra in parsed.barcodes:
                row = conn.execute("SELECT is_group FROM goods WHERE store=? AND code=?",
                                   (store, extra.code)).fetchone()
                if row is None or row["is_group"]:
                    raise GoodsFileError(extra.line, f"штрихкод {extra.barcode} для товара {extra.code}, "
                                                     "которого нет в файле и в каталоге")
                conn.execute(
                    "INSERT INTO barcodes (store, barcode, code, name, price, coefficient) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT(store, barcode) DO UPDATE SET code=excluded.code, name=excluded.name,"
                    " price=excluded.price, coefficient=excluded.coefficient",
                    (store, extra.barcode, extra.code, extra.name, extra.price, str(extra.coefficient)),
                )
            conn.execute(
                "INSERT INTO loads (store, path, command, goods, barcodes, loaded_at) VALUES (?, ?, ?, ?, ?, ?)",
                (store, path, parsed.command or "$$$ADD", len(parsed.goods), len(parsed.barcodes), time.time()),
            )
            if applied is not None:
                conn.execute(
                    "INSERT INTO applied (store, path, size, sha256, summary, applied_at) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT(store) DO UPDATE SET path=excluded.path, size=excluded.size,"
                    " sha256=excluded.sha256, summary=excluded.summary, applied_at=excluded.applied_at",
                    (store, path, applied.size, applied.sha256, applied.summary, time.time()),
                )

    def applied(self, store: str) -> AppliedFile | None:
        """The goods file the store's catalogue last took in (None before the first)."""
        row = self.db.conn().execute(
            "SELECT path, size, sha256, summary FROM applied WHERE store=?", (store,)
        ).fetchone()
        return AppliedFile(row["path"], row["size"], row["sha256"], row["summary"]) if row else None

    def get(self, store: str, code: str) -> Goods | None:
        """A goods item (not a group) by code."""
        code = code.strip().lstrip("0") or "0"
        row = self.db.conn().execute(
            "SELECT * FROM goods WHERE store=? AND code=? AND is_group=0", (store, code)
        ).fetchone()
        return _goods(row) if row else None

    def sale_item(self, store: str, *, code: str | None = None, barcode: str | None = None) -> SaleItem | None:
        """What to sell for a code or a barcode (main barcode first, then the ``#`` lines)."""
        if code:
            goods = self.get(store, code)
            return SaleItem(goods.code, goods.receipt_name, goods.price, goods.weighted) if goods else None
        if not barcode:
            return None
        barcode = barcode.strip()
        conn = self.db.conn()
        row = conn.execute(
            "SELECT * FROM goods WHERE store=? AND barcode=? AND is_group=0 ORDER BY code LIMIT 1", (store, barcode)
        ).fetchone()
        if row is not None:
            goods = _goods(row)
            return SaleItem(goods.code, goods.receipt_name, goods.price, goods.weighted)
        extra = conn.execute("SELECT * FROM barcodes WHERE store=? AND barcode=?", (store, barcode)).fetchone()
        goods = self.get(store, extra["code"]) if extra is not None else None
        if goods is None:
            return None
        coefficient = Decimal(extra["coefficient"])
        price = extra["price"] or int((goods.price * coefficient).to_integral_value(rounding=ROUND_HALF_UP))
        return SaleItem(goods.code, extra["name"] or goods.receipt_name, price, goods.weighted, coefficient)

    def extra_barcodes(self, store: str, code: str) -> list[ExtraBarcode]:
        """The ``#``-line barcodes of a goods item."""
        rows = self.db.conn().execute(
            "SELECT * FROM barcodes WHERE store=? AND code=? ORDER BY barcode", (store, code)
        ).fetchall()
        return [ExtraBarcode(code=r["code"], barcode=r["barcode"], name=r["name"], price=r["price"],
                             coefficient=Decimal(r["coefficient"])) for r in rows]

    def search(
        self, store: str, *, q: str = "", barcode: str = "", code: str = "", limit: int = 100, offset: int = 0
    ) -> tuple[list[Goods], int]:
        """Goods and groups of a store matching every filter given; (page, total count)."""
        where = ["store=?"]
        args: list[object] = [store]
        if code:
            where.append("code=?")
            args.append(code.strip().lstrip("0") or "0")
        if barcode:
            where.append("(barcode=? OR code IN (SELECT code FROM barcodes WHERE store=? AND barcode=?))")
            args += [barcode.strip(), store, barcode.strip()]
        conn = self.db.conn()
        rows = conn.execute(f"SELECT * FROM goods WHERE {' AND '.join(where)} ORDER BY CAST(code AS INTEGER)",
                            args).fetchall()
        found = [_goods(r) for r in rows]
        if q:
            # SQLite's LIKE folds ASCII only; Russian names are matched case-insensitively here.
            needle = q.strip().casefold()
            found = [g for g in found if needle in g.name.casefold() or needle in g.short_name.casefold()
                     or needle in g.article.casefold()]
        limit = max(1, min(int(limit), MAX_LIMIT))
        return found[offset:offset + limit], len(found)

    def count(self, store: str) -> int:
        """Goods items (not groups) of a store."""
        return self.db.conn().execute(
            "SELECT COUNT(*) FROM goods WHERE store=? AND is_group=0", (store,)
        ).fetchone()[0]

    def last_load(self, store: str) -> dict | None:
        """The store's latest successful load: path, command, counts, time."""
        row = self.db.conn().execute(
            "SELECT path, command, goods, barcodes, loaded_at FROM loads WHERE store=? ORDER BY seq DESC LIMIT 1",
            (store,),
        ).fetchone()
        return dict(row) if row else None
