"""Reader of the goods file 1C writes for a "Штрих-М: Кассир 5" register (e.g. ``Pos3.spr``).

Pure parsing, no I/O besides the bytes given: the poller reads the file, this module turns it
into a :class:`GoodsFile` or raises :class:`GoodsFileError` naming the line and what is wrong.
Layout (file-exchange.md §2.1–2.2, from 1C's BPO "ККМ Offline" Кассир module and ДЭНСИ's
ShtrihLoad): windows-1251 text, CRLF or LF, fields separated by ``;``; line 1 ``##@@&&``,
line 2 ``#`` (not loaded yet) or ``@`` (loaded); a ``$$$`` command line (``$$$CLR`` replaces the
goods base, ``$$$ADD`` adds and changes; not always on line 3); goods and group lines of 17 fields
(newer readers take up to 25: the extra ones are ignored); ``#code;barcode;…`` lines with extra
barcodes or packages of a goods item.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from ..domain import MAX_NAME, DomainError, to_kopecks

#: Line 1 of every Кассир exchange file.
SIGNATURE = "##@@&&"
#: Line 2 before / after a register loaded the file.
NOT_LOADED = "#"
LOADED = "@"
#: The file's encoding: 1C writes "ANSI", windows-1251 on a Russian Windows.
ENCODING = "cp1251"
#: What the operator changes in 1C when a goods file comes in another encoding.
ENCODING_HINT = "в карточке ККМ в 1С выберите кодировку текста ANSI (windows-1251)"
#: The byte order mark 1C (and most editors) put at the start of a UTF-8 text file.
UTF8_BOM = b"\xef\xbb\xbf"
#: Letters of Russian text: what a UTF-8 goods file from 1C is made of beyond ASCII.
RUSSIAN_LETTERS = frozenset(chr(c) for c in range(0x410, 0x450)) | {"Ё", "ё"}
#: Fields of a goods or group line as 1C writes it.
GOODS_FIELDS = 17
#: Fields of a ``#`` (extra barcode) line as 1C writes it when its names hold no ``;``.
BARCODE_FIELDS = 10
#: Longest goods code: a number of up to 13 digits.
MAX_CODE = 13
#: Longest barcode kept (EAN-13 and the internal codes 1C generates fit).
MAX_BARCODE = 64
#: Prefixes of line kinds this service does not use (discount schemes, tariffed goods,
#: modifiers, file-exchange.md §2.2): skipped, counted.
SKIPPED_PREFIXES = ("^", "!", "%", "{", "–", "-")
#: Commands of the Frontol format: a 1C set to the wrong exchange format writes these.
FRONTOL_COMMANDS = ("$$$ADDQUANTITY", "$$$REPLACEQUANTITY", "$$$DELETEALL", "$$$DELETEWARES", "$$$ADDBARCODES")


class GoodsFileError(ValueError):
    """A goods file that cannot be loaded; ``line`` is 1-based (0: the file as a whole)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"строка {line}: {message}" if line else message)
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Goods:
    """A goods item or group of the catalogue (money in kopecks)."""

    code: str
    name: str
    short_name: str = ""
    barcode: str = ""
    #: 0 = no price in 1C (an empty field 5).
    price: int = 0
    weighted: bool = False
    is_group: bool = False
    parent: str = ""
    article: str = ""

    @property
    def receipt_name(self) -> str:
        """What the receipt prints: the short (receipt) name when 1C gave one."""
        return self.short_name or self.name


@dataclass(frozen=True)
class ExtraBarcode:
    """A ``#`` line: another barcode of a goods item, possibly a package of several units."""

    code: str
    barcode: str
    name: str = ""
    #: Price of the package in kopecks; 0 = the goods item's price × coefficient.
    price: int = 0
    coefficient: Decimal = Decimal(1)
    line: int = 0


@dataclass
class GoodsFile:
    """A parsed goods file."""

    #: False: the file is already marked loaded (line 2 ``@``); nothing else was read.
    pending: bool
    #: True for ``$$$CLR`` (the store's catalogue is replaced), False for ``$$$ADD``.
    replace: bool = False
    command: str = ""
    goods: list[Goods] = field(default_factory=list)
    barcodes: list[ExtraBarcode] = field(default_factory=list)
    skipped: int = 0
    #: Line numbers of the goods lines by code (a later line with the same code wins).
    lines: dict[str, int] = field(default_factory=dict)


def _utf8_text(data: bytes) -> bool:
    """Whether a file without a BOM is Russian text in UTF-8 rather than windows-1251.

    windows-1251 Cyrillic is practically never valid UTF-8: its lowercase letters (0xE0-0xFF) are
    UTF-8 lead bytes of 3 or 4 bytes that need two or three bytes 0x80-0xBF after them, which in
    windows-1251 are rare signs (Ё, №, «»), and its capitals (0xC0-0xDF) need one. So the whole
    file must decode strictly, and most of what is beyond ASCII must be Russian letters.
    """
    if data.isascii():
        return False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    wide = [c for c in text if ord(c) > 0x7F]
    return sum(c in RUSSIAN_LETTERS for c in wide) * 2 > len(wide)


def check_encoding(data: bytes) -> None:
    """Refuse a UTF-8 goods file: read as windows-1251 it would load garbled names without a word."""
    if data.startswith(UTF8_BOM):
        raise GoodsFileError(0, f"файл в кодировке UTF-8 (с меткой BOM), а нужна windows-1251 (ANSI): "
                                f"{ENCODING_HINT}")
    if _utf8_text(data):
        raise GoodsFileError(0, f"файл в кодировке UTF-8 (русские буквы по два байта), а нужна windows-1251 "
                                f"(ANSI): {ENCODING_HINT}")


def split_lines(data: bytes) -> list[str]:
    """windows-1251 bytes → lines without CR/LF; an undecodable byte names its line."""
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    lines = []
    for number, chunk in enumerate(raw, 1):
        try:
            lines.append(chunk.rstrip(b"\r").decode(ENCODING))
        except UnicodeDecodeError as exc:
            raise GoodsFileError(number, f"байт 0x{chunk[exc.start]:02X} не из кодировки windows-1251 (ANSI); "
                                         f"{ENCODING_HINT}") from None
    return lines


def parse_goods_file(data: bytes) -> GoodsFile:
    """Parse a whole goods file; the first bad line raises :class:`GoodsFileError`."""
    check_encoding(data)
    lines = split_lines(data)
    if not lines or lines[0].strip() != SIGNATURE:
        raise GoodsFileError(1, f"первая строка должна быть {SIGNATURE} (файл не в формате «Штрих-М: Кассир 5»)")
    marker = lines[1].strip() if len(lines) > 1 else ""
    if marker.startswith(LOADED):
        return GoodsFile(pending=False)
    if not marker.startswith(NOT_LOADED):
        raise GoodsFileError(2, "вторая строка должна быть # (не загружен) или @ (загружен)")
    parsed = GoodsFile(pending=True)
    for number, line in enumerate(lines[2:], 3):
        text = line.strip()
        if not text:
            continue
        if text.startswith("$$$"):
            _command(parsed, text, number)
        elif text[0].isdigit():
            goods = parse_goods_line(text, number)
            parsed.goods.append(goods)
            parsed.lines[goods.code] = number
        elif text.startswith("#"):
            parsed.barcodes.append(parse_barcode_line(text, number))
        elif text.startswith(SKIPPED_PREFIXES):
            parsed.skipped += 1
        else:
            raise GoodsFileError(number, f"непонятная строка «{text[:40]}»: ожидается товар (начинается с кода), "
                                         "#штрихкод или команда $$$")
    return parsed


def _command(parsed: GoodsFile, text: str, number: int) -> None:
    upper = text.upper()
    if upper.startswith(FRONTOL_COMMANDS):
        raise GoodsFileError(number, f"команда {text} из формата АТОЛ Frontol; в карточке ККМ в 1С выберите "
                                     "формат «Штрих-М: Кассир 5»")
    if upper.startswith("$$$CLR"):
        # {NO_TOV}: clear other tables but keep the goods (ДЭНСИ ShtrihLoad).
        parsed.replace = parsed.replace or "{NO_TOV}" not in upper
    elif not upper.startswith(("$$$ADD", "$$$RPL")):
        raise GoodsFileError(number, f"неизвестная команда {text[:40]}; ожидается $$$CLR или $$$ADD")
    parsed.command = parsed.command or text


def _fields(text: str) -> list[str]:
    return [f.strip() for f in text.split(";")]


def _code(value: str, number: int, what: str = "код товара") -> str:
    if not value.isdigit() or len(value) > MAX_CODE or int(value) == 0:
        raise GoodsFileError(number, f"{what} «{value}»: ожидается число от 1 до {MAX_CODE} цифр")
    return str(int(value))


def _name(value: str, number: int, what: str) -> str:
    if len(value) > MAX_NAME:
        raise GoodsFileError(number, f"{what} длиннее {MAX_NAME} символов")
    return value


def _barcode(value: str, number: int) -> str:
    if len(value) > MAX_BARCODE:
        raise GoodsFileError(number, f"штрихкод длиннее {MAX_BARCODE} символов")
    return value


def _price(value: str, number: int) -> int:
    if not value:
        return 0
    try:
        price = to_kopecks(value, "price")
    except DomainError as exc:
        raise GoodsFileError(number, f"цена «{value}»: {exc.message}") from None
    if price < 0:
        raise GoodsFileError(number, f"цена «{value}» отрицательна")
    return price


def parse_goods_line(text: str, number: int) -> Goods:
    """A 17-field goods or group line (file-exchange.md §2.2, the table)."""
    f = _fields(text)
    if len(f) < GOODS_FIELDS:
        raise GoodsFileError(number, f"в строке товара {len(f)} полей через «;», нужно не меньше {GOODS_FIELDS}")
    kind = f[16]
    if kind not in ("0", "1"):
        raise GoodsFileError(number, f"поле 17 «{kind}»: ожидается 1 (товар) или 0 (группа)")
    is_group = kind == "0"
    code = _code(f[0], number)
    name = _name(f[2], number, "наименование")
    short = _name(f[3], number, "наименование для чека")
    if not (name or short):
        raise GoodsFileError(number, f"у товара {code} нет наименования")
    weighted = f[7]
    if weighted not in ("", "0", "1"):
        raise GoodsFileError(number, f"поле 8 (весовой товар) «{weighted}»: ожидается 1 или 0")
    # An empty price is 0: 1C formats the price with "ND=15; NFD=2; NDS=.; NG=0", which gives ""
    # for 0. Such an item is in the catalogue but is sold only at a price the request gives
    # (kktapp.web.sale), never at 0.
    price = _price(f[4], number)
    parent = f[15]
    return Goods(
        code=code, name=name or short, short_name=short, barcode=_barcode(f[1], number), price=price,
        weighted=weighted == "1", is_group=is_group,
        parent=_code(parent, number, "код группы") if parent not in ("", "0") else "",
        article=f[11] if f[11] != "0" else "",
    )


def _coefficient(value: str, number: int) -> Decimal:
    # 1C writes Factor with its default number format: "1 000" (a no-break space groups the
    # digits), "0,5" (a decimal comma). Empty or 0 means one unit.
    plain = "".join(value.split()).replace(",", ".")
    if plain in ("", "0"):
        return Decimal(1)
    try:
        coefficient = Decimal(plain)
    except InvalidOperation:
        raise GoodsFileError(number, f"коэффициент «{value}» не число") from None
    if not coefficient.is_finite() or coefficient <= 0:
        raise GoodsFileError(number, f"коэффициент «{value}» должен быть больше нуля")
    return coefficient


def parse_barcode_line(text: str, number: int) -> ExtraBarcode:
    """``# code;barcode;full name;short name;price;;;;;coefficient``: an extra barcode or a package.

    1C's Кассир module writes this line as ``"# " + code;barcode;TrimAll(full name);TrimAll(name);
    price;;;;;Factor`` (file-exchange.md §0 source 1): unlike on the goods line, the names go
    through TrimAll only, so they may hold ``;`` and run past 100 characters, and Factor has 1C's
    default number format. What the line is for is its code, barcode and factor (ДЭНСИ reads just
    those, fields 1, 2 and 10); the price (1C writes the goods item's own) sets what a package
    sells at. So code and barcode are read from the front, price and factor from the end
    (``price;;;;;factor``), and the names only when they cannot be mis-split (exactly 10 fields)
    and fit a receipt; otherwise the goods item's own names are used (1C writes the same ones).
    """
    f = _fields(text[1:])
    if len(f) < 2 or not f[1]:
        raise GoodsFileError(number, "в строке #штрихкода нужны код товара и штрихкод")
    if len(f) >= BARCODE_FIELDS:
        price, coefficient = _price(f[-6], number), _coefficient(f[-1], number)
        names = f[2:-6]
    else:
        # A shorter line from another producer: code; barcode; full name; short name; price.
        price, coefficient = (_price(f[4], number) if len(f) > 4 else 0), Decimal(1)
        names = f[2:4]
    name = ""
    if len(names) <= 2:
        name = names[-1] if len(names) == 2 and names[1] else (names[0] if names else "")
        name = name if len(name) <= MAX_NAME else ""
    return ExtraBarcode(code=_code(f[0], number), barcode=_barcode(f[1], number), name=name, price=price,
                        coefficient=coefficient, line=number)


def mark_loaded(data: bytes) -> int:
    """Offset of line 2's first byte: the register writes ``@`` there once the file is loaded."""
    return data.index(b"\n") + 1
