"""The receipt as the service understands it, independent of any contract or device.

Pure Python, no I/O. Every fiscal rule that does not depend on the device lives here:
money is integer kopecks, quantities are Decimal with at most three decimals, VAT rates
are the ones the law allows on the receipt date (fiscal-rules.md §1), sums must agree to
the kopeck. Web contracts translate into these objects; drivers translate them to bytes.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import unicodedata
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

#: Largest price, position sum or receipt total the FN formats carry (99 999 999.99 ₽).
MAX_MONEY = 9_999_999_999
#: Item name limit, tag 1030.
MAX_NAME = 128
#: Cashier name limit, tag 1021 (fiscal-rules.md §2).
MAX_CASHIER_NAME = 64
#: The ATOL position command carries quantity with three implied decimals.
QUANTITY_DECIMALS = 3
#: The day the 22 % general rate took over from 20 % (425-ФЗ).
VAT22_SINCE = dt.date(2026, 1, 1)


#: The FN's fiscal document of FFD type 21, made on request (KKM Server's OfdReport, libfptr's
#: LIBFPTR_RT_OFD_EXCHANGE_STATUS): its Russian name, for messages, steps and pages.
SETTLEMENT_REPORT_TITLE = "отчёт о текущем состоянии расчётов"
#: Most significant digits a money amount or quantity may have before any arithmetic on it:
#: far above every fiscal limit, low enough that ``1e999999999`` or 5,000 digits never reach
#: Decimal arithmetic or int() (an overflow, or a billion-digit integer), and that rounding to
#: three decimals stays within Decimal's default 28-digit precision (1e25 would not).
MAX_NUMBER_DIGITS = 20
#: Integers below this pass _check_magnitude: at most MAX_NUMBER_DIGITS digits.
_INT_LIMIT = 10**MAX_NUMBER_DIGITS


class DomainError(ValueError):
    """A receipt that breaks a fiscal rule; ``field`` names what is wrong for the caller."""

    def __init__(self, field: str, message: str, value: object = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.value = value


# --------------------------------------------------------------------------- money


def to_kopecks(value: object, field: str = "sum", *, round_half_up: bool = False) -> int:
    """Parse roubles (int, Decimal or numeric string; never float) into integer kopecks.

    More than two decimals is an error, not a rounding: a caller who sends 1.005 ₽ has a bug.
    ``round_half_up`` is for a contract whose known clients write sums with more decimals (KKM
    Server's): there 1.005 ₽ becomes 1.01 ₽, and the contract says so to the caller.
    """
    if type(value) is int and -_INT_LIMIT < value < _INT_LIMIT:
        return value * 100  # whole roubles, within _check_magnitude's limit: nothing else to check
    kop = parse_roubles(value, field) * 100
    if kop != kop.to_integral_value():
        if not round_half_up:
            raise DomainError(field, "больше двух знаков после запятой", value)
        kop = kop.to_integral_value(rounding=ROUND_HALF_UP)
    return int(kop)


def parse_roubles(value: object, field: str = "sum") -> Decimal:
    """Roubles (int, Decimal or numeric string; never float) as an exact Decimal, any number of decimals."""
    if isinstance(value, bool) or isinstance(value, float):
        # JSON is parsed with parse_float=Decimal; a float here means a caller bypassed that.
        raise DomainError(field, "сумма должна быть числом в рублях с копейками", value)
    try:
        amount = Decimal(str(value).strip().replace(",", ".")) if isinstance(value, str) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise DomainError(field, "не число", value) from None
    if not amount.is_finite():
        raise DomainError(field, "не число", value)
    _check_magnitude(amount, field, value)
    return amount


def _check_magnitude(number: Decimal, field: str, value: object) -> None:
    """Refuse absurd magnitudes and precisions before they are multiplied or converted."""
    digits = len(number.as_tuple().digits)
    if digits > MAX_NUMBER_DIGITS or not -MAX_NUMBER_DIGITS < number.adjusted() < MAX_NUMBER_DIGITS:
        text = str(number)
        raise DomainError(field, "число вне допустимого диапазона", text if len(text) <= 40 else f"{digits} цифр")


def format_rub(kopecks: int) -> str:
    """Kopecks as a rouble string with two decimals, for messages and logs."""
    sign = "-" if kopecks < 0 else ""
    rub, kop = divmod(abs(kopecks), 100)
    return f"{sign}{rub}.{kop:02d}"


def to_quantity(value: object, field: str = "quantity") -> Decimal:
    """Parse a quantity: positive, at most three decimals (the ATOL position command's limit)."""
    if type(value) is int and 0 < value < _INT_LIMIT:
        return Decimal(value)  # a whole positive quantity within _check_magnitude's limit
    if isinstance(value, bool) or isinstance(value, float):
        raise DomainError(field, "количество должно быть числом", value)
    try:
        qty = Decimal(str(value).strip().replace(",", ".")) if isinstance(value, str) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise DomainError(field, "не число", value) from None
    if not qty.is_finite() or qty <= 0:
        raise DomainError(field, "количество должно быть больше нуля", value)
    _check_magnitude(qty, field, value)
    if qty != qty.quantize(Decimal(1).scaleb(-QUANTITY_DECIMALS), rounding=ROUND_HALF_UP):
        raise DomainError(field, "не больше трёх знаков после запятой", value)
    return qty


@functools.lru_cache(maxsize=4096)
def position_amount(price: int, quantity: Decimal) -> int:
    """Price × quantity rounded half-up to the kopeck (tag 1043 from 1079 × 1023)."""
    # Cached: a receipt's checks ask it three times per position (the contract's sum check, the
    # discount, the device's limits), and the Decimal product is most of a validation's time
    # after the schema's. Equal quantities (1 and 1.000) give the same product.
    return int((Decimal(price) * quantity).to_integral_value(rounding=ROUND_HALF_UP))


# --------------------------------------------------------------------------- device text

#: Unicode categories never sent to a device: controls (NUL, ESC sequences), format characters
#: (RLO and other bidi overrides, zero-width joiners), surrogates, private use, unassigned.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
#: Line breaks and tabs: harmless intent (pasted text), printed as one space each.
_SPACES = frozenset("\t\n\r\x0b\x0c\x85\u2028\u2029")


def check_device_text(text: str, field: str) -> None:
    """Raise DomainError when the text holds a character a device must not receive."""
    if text.isprintable():
        # Every refused category and every _SPACES character is non-printable for str.isprintable.
        return
    for i, ch in enumerate(text, 1):
        if ch in _SPACES or unicodedata.category(ch) in _REFUSED_CATEGORIES:
            raise DomainError(field, f"недопустимый управляющий символ U+{ord(ch):04X} (позиция {i})")


def spaces_for_breaks(text: str) -> str:
    """Tabs and line breaks → spaces (a CR LF pair is one space); other characters unchanged."""
    if text.isprintable() or not any(ch in _SPACES for ch in text):
        return text
    return "".join(" " if ch in _SPACES else ch for ch in text.replace("\r\n", "\n"))


# --------------------------------------------------------------------------- enums


class StrEnum(str, enum.Enum):
    """``enum.StrEnum`` for Python 3.10 (it came in 3.11): str() and format() give the value.

    A plain ``(str, Enum)`` would print ``VatRate.VAT22`` on 3.12+, where format() follows str().
    """

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(self, spec)


class VatRate(StrEnum):
    """VAT rate of a position; value is the canonical API name (ATOL JSON ``tax.type``)."""

    NONE = "none"
    VAT0 = "vat0"
    VAT5 = "vat5"
    VAT7 = "vat7"
    VAT10 = "vat10"
    VAT22 = "vat22"
    VAT105 = "vat105"
    VAT107 = "vat107"
    VAT110 = "vat110"
    VAT122 = "vat122"
    # 20 % and 20/120 remain for settlements made before 2026 (returns and corrections of
    # 2025 sales, FNS letter АБ-4-20/11248@); fresh sales map old names to 22 %.
    VAT20 = "vat20"
    VAT120 = "vat120"

    @property
    def tag1199(self) -> int:
        """Value of FFD tag 1199 (fiscal-rules.md §1)."""
        return _TAG1199[self]

    @property
    def title(self) -> str:
        """How the rate is printed and shown to people."""
        return _VAT_TITLES[self]


_TAG1199 = {
    VatRate.VAT20: 1, VatRate.VAT10: 2, VatRate.VAT120: 3, VatRate.VAT110: 4, VatRate.VAT0: 5,
    VatRate.NONE: 6, VatRate.VAT5: 7, VatRate.VAT7: 8, VatRate.VAT105: 9, VatRate.VAT107: 10,
    VatRate.VAT22: 11, VatRate.VAT122: 12,
}
_VAT_TITLES = {
    VatRate.NONE: "без НДС", VatRate.VAT0: "НДС 0%", VatRate.VAT5: "НДС 5%", VatRate.VAT7: "НДС 7%",
    VatRate.VAT10: "НДС 10%", VatRate.VAT22: "НДС 22%", VatRate.VAT105: "НДС 5/105",
    VatRate.VAT107: "НДС 7/107", VatRate.VAT110: "НДС 10/110", VatRate.VAT122: "НДС 22/122",
    VatRate.VAT20: "НДС 20%", VatRate.VAT120: "НДС 20/120",
}
VAT_BY_TAG1199 = {v: k for k, v in _TAG1199.items()}

# Names callers use for today's rates. Keys are compared after lower-casing and removing
# spaces, "%" and the "ндс"/"nds"/"vat" prefixes, so "НДС 10%", "nds10", "vat10", 10 and "10"
# all reach the same rate.
_VAT_ALIASES = {
    "0": VatRate.VAT0, "5": VatRate.VAT5, "7": VatRate.VAT7, "10": VatRate.VAT10,
    "22": VatRate.VAT22, "10/110": VatRate.VAT110, "110": VatRate.VAT110,
    "22/122": VatRate.VAT122, "122": VatRate.VAT122, "5/105": VatRate.VAT105, "105": VatRate.VAT105,
    "7/107": VatRate.VAT107, "107": VatRate.VAT107,
    "none": VatRate.NONE, "безндс": VatRate.NONE, "без": VatRate.NONE, "no": VatRate.NONE, "-1": VatRate.NONE,
}
# Superseded general rates: "18" became 20 % in 2019 and 20 % became 22 % in 2026. Like the
# devices' firmware (fiscal-rules.md §1, the MITSU/Shtrih date switch), they mean whatever the
# general rate is on the receipt date.
_LEGACY_GENERAL = {"18", "20"}
_LEGACY_CALCULATED = {"18/118", "118", "20/120", "120"}
# On a return 20 % and 20/120 are not old names for today's rate: a 2026 return of a settlement
# made before 2026 is made at that settlement's rate (FNS letter АБ-4-20/11248@, fiscal-rules.md
# §1), and the caller who sends 20 on a return means it. The same letter puts the 2026 payment
# of a 2025 credit sale (1214 = 7, оплата кредита) at the sale's 20 %. 18 stays an old name everywhere.
_KEPT_ON_RETURNS = {"20": VatRate.VAT20, "20/120": VatRate.VAT120, "120": VatRate.VAT120}


class LegacyRateRejected(DomainError):
    """An old rate name (18 %, 20 %) while configuration says to refuse them."""


def _vat_key(value: object) -> str:
    return _vat_text_key(str(value))


@functools.lru_cache(maxsize=256)
def _vat_text_key(text: str) -> str:
    # Cached: every position's rate is looked up twice (the rate, and whether its name is a
    # legacy one) and a receipt uses two or three names.
    text = text.strip().lower().replace(" ", "").replace("%", "").replace(",", ".")
    for prefix in ("ндс", "nds", "vat"):
        if text.startswith(prefix):
            # "nds_10", "vat-10"; only after a prefix: KKM Server's "-1" (no VAT) keeps its sign.
            text = text[len(prefix):].lstrip("_-")
            break
    if text.endswith(".0"):
        text = text[:-2]
    return text


def _kept_as_given(key: str, settlement: SettlementType | None, payment_method: PaymentMethod | None) -> bool:
    if key not in _KEPT_ON_RETURNS:
        return False
    return (settlement is not None and settlement.is_return) or payment_method is PaymentMethod.CREDIT_PAYMENT


def is_legacy_vat(value: object, settlement: SettlementType | None = None,
                  payment_method: PaymentMethod | None = None) -> bool:
    """True for a superseded general rate name (18, 20, "НДС18", "nds20", "20/120", …).

    On a return (``settlement``) or a credit payment (``payment_method`` 7) 20 and 20/120 are the
    earlier settlement's rate, not old names.
    """
    if isinstance(value, (bool, float)) or value is None:
        return False
    key = _vat_key(value)
    if _kept_as_given(key, settlement, payment_method):
        return False
    return key in _LEGACY_GENERAL or key in _LEGACY_CALCULATED


def general_rate(on: dt.date, calculated: bool = False) -> VatRate:
    """The general VAT rate in force on a date (plain or calculated x/1xx)."""
    if on >= VAT22_SINCE:
        return VatRate.VAT122 if calculated else VatRate.VAT22
    return VatRate.VAT120 if calculated else VatRate.VAT20


def parse_vat(value: object, on: dt.date, *, accept_legacy: bool = True, field: str = "tax",
              settlement: SettlementType | None = None, payment_method: PaymentMethod | None = None) -> VatRate:
    """Map a caller's VAT name to a rate allowed on ``on`` (the receipt date).

    Canonical names (``vat22``) and numbers (22, "22/122", "без НДС") map directly; 22 and 22/122
    are refused before :data:`VAT22_SINCE` (a correction of a 2025 settlement is made at 20 %).
    Legacy general rates (18, 20, "НДС18", "nds18", "vat20", with /118 and /120 forms) become the
    general rate on ``on`` unless ``accept_legacy`` is false, in which case they are refused. On a
    return (``settlement`` with :attr:`SettlementType.is_return`) and on a credit payment
    (``payment_method`` :attr:`PaymentMethod.CREDIT_PAYMENT`) 20 and 20/120 are kept as given,
    whatever ``on`` and ``accept_legacy`` say: they are the rate of the earlier settlement.
    """
    if isinstance(value, bool) or value is None:
        raise DomainError(field, "ставка НДС не указана", value)
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, float):
        raise DomainError(field, "неизвестная ставка НДС", value)
    key = _vat_key(value)
    if key in _VAT_ALIASES:
        rate = _VAT_ALIASES[key]
        check_rate_date(rate, on, field, value)
        return rate
    if _kept_as_given(key, settlement, payment_method):
        return _KEPT_ON_RETURNS[key]
    if key in _LEGACY_GENERAL or key in _LEGACY_CALCULATED:
        if not accept_legacy:
            raise LegacyRateRejected(
                field, "устаревшая ставка НДС; укажите действующую (22, 10, 0, 5, 7 или без НДС)", value
            )
        return general_rate(on, calculated=key in _LEGACY_CALCULATED)
    raise DomainError(
        field,
        "неизвестная ставка НДС; допустимо: 22, 10, 0, 5, 7, 22/122, 10/110, 5/105, 7/107, без НДС",
        value,
    )


def check_rate_date(rate: VatRate, on: dt.date, field: str = "tax", value: object = None) -> None:
    """Refuse 22 % and 22/122 for a settlement made before they came into force (425-ФЗ).

    A correction of a 2025 receipt is made at that receipt's 20 % or 20/120 (FNS letter
    АБ-4-20/11248@, fiscal-rules.md §1); 22 % on it would be a wrong tax, not an old name.
    """
    if rate in _VAT22_RATES and on < VAT22_SINCE:
        raise DomainError(
            field,
            f"ставка {rate.title} действует с {VAT22_SINCE:%d.%m.%Y}; для расчёта от {on:%d.%m.%Y} "
            f"укажите ставку того дня ({general_rate(on, rate is VatRate.VAT122).title})",
            value if value is not None else rate.value,
        )


_VAT22_RATES = frozenset({VatRate.VAT22, VatRate.VAT122})


class SettlementType(StrEnum):
    """Receipt type; tag 1054 for the first four, corrections carry the same sign."""

    SELL = "sell"
    SELL_RETURN = "sell_return"
    BUY = "buy"
    BUY_RETURN = "buy_return"
    SELL_CORRECTION = "sell_correction"
    SELL_RETURN_CORRECTION = "sell_return_correction"
    BUY_CORRECTION = "buy_correction"
    BUY_RETURN_CORRECTION = "buy_return_correction"

    @property
    def is_correction(self) -> bool:
        """True for the four correction types."""
        return self.value.endswith("_correction")

    @property
    def is_return(self) -> bool:
        """True for returns (1054 = 2 or 4) and their corrections: they give back an earlier settlement."""
        return self.tag1054 in (_TAG1054["sell_return"], _TAG1054["buy_return"])

    @property
    def title(self) -> str:
        """Russian name, as printed."""
        return _SETTLEMENT_TITLES[self]

    @property
    def tag1054(self) -> int:
        """Признак расчёта, tag 1054 (the receipt QR code's ``n``): corrections carry their base's."""
        return _TAG1054[self.value.removesuffix("_correction")]


#: Tag 1054: 1 приход, 2 возврат прихода, 3 расход, 4 возврат расхода.
_TAG1054 = {"sell": 1, "sell_return": 2, "buy": 3, "buy_return": 4}


_SETTLEMENT_TITLES = {
    SettlementType.SELL: "Приход", SettlementType.SELL_RETURN: "Возврат прихода",
    SettlementType.BUY: "Расход", SettlementType.BUY_RETURN: "Возврат расхода",
    SettlementType.SELL_CORRECTION: "Коррекция прихода",
    SettlementType.SELL_RETURN_CORRECTION: "Коррекция возврата прихода",
    SettlementType.BUY_CORRECTION: "Коррекция расхода",
    SettlementType.BUY_RETURN_CORRECTION: "Коррекция возврата расхода",
}


class PaymentType(StrEnum):
    """How the buyer paid (tags 1031, 1081, 1215, 1216, 1217)."""

    CASH = "cash"
    ELECTRONIC = "electronic"
    PREPAID = "prepaid"
    CREDIT = "credit"
    OTHER = "other"


class PaymentMethod(enum.IntEnum):
    """Tag 1214, признак способа расчёта."""

    FULL_PREPAYMENT = 1
    PREPAYMENT = 2
    ADVANCE = 3
    FULL_PAYMENT = 4
    PARTIAL_PAYMENT = 5
    CREDIT = 6
    CREDIT_PAYMENT = 7


PAYMENT_METHOD_NAMES = {
    "fullPrepayment": PaymentMethod.FULL_PREPAYMENT, "prepayment": PaymentMethod.PREPAYMENT,
    "advance": PaymentMethod.ADVANCE, "fullPayment": PaymentMethod.FULL_PAYMENT,
    "partialPayment": PaymentMethod.PARTIAL_PAYMENT, "credit": PaymentMethod.CREDIT,
    "creditPayment": PaymentMethod.CREDIT_PAYMENT,
}

#: Tag 1212, признак предмета расчёта: API names (ATOL JSON) → tag value.
PAYMENT_OBJECT_NAMES = {
    "commodity": 1, "excise": 2, "job": 3, "service": 4, "gamblingBet": 5, "gamblingPrize": 6,
    "lottery": 7, "lotteryPrize": 8, "intellectualActivity": 9, "payment": 10,
    "agentCommission": 11, "pay": 12, "another": 13, "proprietaryLaw": 14, "nonOperatingIncome": 15,
    "otherContributions": 16, "merchantTax": 17, "resortFee": 18, "deposit": 19, "consumption": 20,
    "soleProprietorCPIContributions": 21, "cpiContributions": 22, "soleProprietorCMIContributions": 23,
    "cmiContributions": 24, "csiContributions": 25, "casinoPayment": 26, "fundsIssuance": 27,
    "exciseWithoutMarking": 30, "exciseWithMarking": 31, "commodityWithoutMarking": 32,
    "commodityWithMarking": 33,
}

#: Tag 1212 values of goods "with a marking code" (31 excise, 33 other goods; fiscal-rules.md §2):
#: such a position needs the code (2000/1163), which kkt cannot send yet, so it is refused.
MARKED_OBJECTS = frozenset({31, 33})


def payment_method_of(value: object) -> PaymentMethod | None:
    """Tag 1214 from a caller's raw value: a name ("creditPayment") or a number (7, "7").

    None for anything else: the contract's own 1214 field reports that in its words.
    """
    if isinstance(value, str):
        if value in PAYMENT_METHOD_NAMES:
            return PAYMENT_METHOD_NAMES[value]
        value = int(value) if value.strip().isdigit() else None
    if type(value) is int and value in PaymentMethod._value2member_map_:
        return PaymentMethod(value)
    return None


#: Tag 2108, мера количества (FFD 1.2): API names → code.
MEASUREMENT_UNITS = {
    "piece": 0, "gram": 10, "kilogram": 11, "ton": 12, "centimeter": 20, "decimeter": 21, "meter": 22,
    "squareCentimeter": 30, "squareDecimeter": 31, "squareMeter": 32, "milliliter": 40, "liter": 41,
    "cubicMeter": 42, "kilowattHour": 50, "gigacalorie": 51, "day": 70, "hour": 71, "minute": 72,
    "second": 73, "kilobyte": 80, "megabyte": 81, "gigabyte": 82, "terabyte": 83, "otherUnits": 255,
}


#: Tag 1055, применяемая система налогообложения: one :class:`TaxationSystem` bit per receipt.
TAG_TAXATION = 1055
#: Tag 1187, место расчётов: for an internet settlement the site's address (fiscal-rules.md §5).
TAG_SETTLEMENT_PLACE = 1187
#: Longest place of settlement, characters (fiscal-rules.md §2, S13).
MAX_SETTLEMENT_PLACE = 243
#: Tag 1125, признак расчёта в сети «Интернет» (from 01.09.2025, fiscal-rules.md §5); its value
#: for an internet settlement is 1 (FNS letter АБ-4-20/8172@ of 08.09.2025).
TAG_INTERNET = 1125
INTERNET_SETTLEMENT = 1


class TaxationSystem(enum.IntEnum):
    """Tag 1055 bit values (fiscal-rules.md §2; the same bits as the registration's 1062)."""

    OSN = 1
    USN_INCOME = 2
    USN_INCOME_OUTCOME = 4
    ESN = 16
    PATENT = 32


#: Taxation systems whose payers may apply the special 5 % and 7 % rates (over the УСН income
#: threshold: fiscal-rules.md §1). [I] The check, not a confirmed KKT rule: ОСН, ЕСХН and patent
#: know no such rates.
USN_SYSTEMS = frozenset({TaxationSystem.USN_INCOME, TaxationSystem.USN_INCOME_OUTCOME})
USN_RATES = frozenset({VatRate.VAT5, VatRate.VAT7, VatRate.VAT105, VatRate.VAT107})

TAXATION_NAMES = {
    "osn": TaxationSystem.OSN, "usnIncome": TaxationSystem.USN_INCOME,
    "usnIncomeOutcome": TaxationSystem.USN_INCOME_OUTCOME, "esn": TaxationSystem.ESN,
    "patent": TaxationSystem.PATENT,
}
#: How a taxation system is written for people (error messages, logs).
TAXATION_TITLES = {
    TaxationSystem.OSN: "ОСН", TaxationSystem.USN_INCOME: "УСН доход",
    TaxationSystem.USN_INCOME_OUTCOME: "УСН доход − расход", TaxationSystem.ESN: "ЕСХН",
    TaxationSystem.PATENT: "патент",
}


#: ЕНВД's bit: abolished in 2021, so no receipt carries it, but an old registration may.
_ENVD_BIT = 0x08


def taxation_titles(bits: int) -> str:
    """The systems of a 1055/1062 bit mask in words ("ОСН, патент"); unknown bits as hex."""
    names = [title for system, title in TAXATION_TITLES.items() if bits & system]
    if bits & _ENVD_BIT:
        names.append("ЕНВД")
    rest = bits & ~(sum(TAXATION_TITLES) | _ENVD_BIT)
    if rest:
        names.append(f"0x{rest:02X}")
    return ", ".join(names) or "нет"


# --------------------------------------------------------------------------- documents


@dataclass(frozen=True)
class Position:
    """One line of a receipt. ``price`` and ``amount`` are kopecks after discounts."""

    name: str
    price: int
    quantity: Decimal
    amount: int
    vat: VatRate
    payment_method: PaymentMethod = PaymentMethod.FULL_PAYMENT
    payment_object: int = 1
    unit: int = 0
    department: int = 0
    #: Discount already taken off ``amount``, printed for information only.
    discount: int = 0


@dataclass(frozen=True)
class Payment:
    """One payment line of a receipt (kopecks)."""

    type: PaymentType
    amount: int


@dataclass(frozen=True)
class TextLine:
    """A line of non-fiscal text with print attributes (header, footer, free documents)."""

    text: str
    bold: bool = False
    italic: bool = False
    inverse: bool = False
    underline: bool = False
    double_width: bool = False
    double_height: bool = False
    #: "left", "center" or "right".
    align: str = "left"


@dataclass(frozen=True)
class Correction:
    """Correction details: tags 1173 (type), 1178 (date), 1179 (FNS order number)."""

    by_order: bool
    date: dt.date
    order_number: str = ""


@dataclass(frozen=True)
class Receipt:
    """A fiscal receipt ready for a driver: every sum checked, every rate allowed."""

    type: SettlementType
    positions: tuple[Position, ...]
    payments: tuple[Payment, ...]
    taxation: TaxationSystem | None = None
    customer_contact: str = ""
    electronic_only: bool = False
    cashier_name: str = ""
    cashier_inn: str = ""
    header: tuple[TextLine, ...] = ()
    footer: tuple[TextLine, ...] = ()
    correction: Correction | None = None
    #: Run on the device in test mode: checked, nothing fiscalised.
    test_mode: bool = False
    # Fields added after receipts were first fingerprinted: at their defaults they stay out of
    # the fingerprint (kktapp.service.fingerprint), so a retry of a receipt accepted before
    # they existed is still the same document.
    #: Place of settlement, tag 1187 (an internet sale: the site's address); "" — the one
    #: the register was registered with.
    settlement_place: str = field(default="", metadata={"fingerprint": "omit_default"})
    #: Settlement in the internet, tag 1125 = 1: needs 1008 and 1187 (fiscal-rules.md §5).
    internet: bool = field(default=False, metadata={"fingerprint": "omit_default"})

    @property
    def total(self) -> int:
        """Receipt total (tag 1020) in kopecks."""
        return sum(p.amount for p in self.positions)

    @property
    def paid(self) -> int:
        """Sum of all payments in kopecks."""
        return sum(p.amount for p in self.payments)

    @property
    def change(self) -> int:
        """Change due to the buyer (only cash may exceed the total)."""
        return max(0, self.paid - self.total)


@dataclass(frozen=True)
class FiscalResult:
    """What the fiscal storage says about a closed document."""

    fiscal_document_number: int
    fiscal_sign: str
    receipt_number: int
    shift_number: int
    datetime: dt.datetime
    total: int
    fn_number: str = ""
    #: False when the document is fiscalised but its paper copy is not (yet) printed.
    printed: bool = True
    #: True when the receipt was run in the device's test mode and nothing was fiscalised.
    test_mode: bool = False

    def to_dict(self) -> dict:
        """JSON-ready form; money stays integer kopecks."""
        return {
            "fiscal_document_number": self.fiscal_document_number,
            "fiscal_sign": self.fiscal_sign,
            "receipt_number": self.receipt_number,
            "shift_number": self.shift_number,
            "datetime": self.datetime.isoformat(timespec="seconds"),
            "total": self.total,
            "fn_number": self.fn_number,
            "printed": self.printed,
            "test_mode": self.test_mode,
        }

    @classmethod
    def from_dict(cls, data: dict) -> FiscalResult:
        """Inverse of :meth:`to_dict` (the journal stores results this way)."""
        return cls(
            fiscal_document_number=int(data["fiscal_document_number"]),
            fiscal_sign=str(data["fiscal_sign"]),
            receipt_number=int(data["receipt_number"]),
            shift_number=int(data["shift_number"]),
            datetime=dt.datetime.fromisoformat(data["datetime"]),
            total=int(data["total"]),
            fn_number=str(data.get("fn_number", "")),
            printed=bool(data.get("printed", True)),
            test_mode=bool(data.get("test_mode", False)),
        )


# --------------------------------------------------------------------------- rules


def check_receipt(receipt: Receipt) -> None:
    """Raise :class:`DomainError` unless the receipt is fiscally consistent.

    Contract schemas check their own fields first; this is the last word before a device.
    """
    if not receipt.positions:
        raise DomainError("positions", "в чеке нет ни одной позиции")
    for i, pos in enumerate(receipt.positions, 1):
        where = f"positions[{i}]"
        if not 1 <= len(pos.name) <= MAX_NAME:
            raise DomainError(f"{where}.name", f"наименование должно быть от 1 до {MAX_NAME} символов", pos.name)
        if not 0 <= pos.price <= MAX_MONEY:
            raise DomainError(f"{where}.price", "цена вне допустимого диапазона", format_rub(pos.price))
        if not 0 <= pos.amount <= MAX_MONEY:
            raise DomainError(f"{where}.amount", "сумма позиции вне допустимого диапазона", format_rub(pos.amount))
        if pos.payment_object in MARKED_OBJECTS:
            raise DomainError(f"{where}.payment_object", "товар с кодом маркировки (предмет расчёта 31 или 33): коды "
                              "маркировки пока не поддерживаются сервисом kkt", pos.payment_object)
        if receipt.taxation is not None and receipt.taxation not in USN_SYSTEMS and pos.vat in USN_RATES:
            raise DomainError(f"{where}.vat", f"ставка {pos.vat.title} применяется только при УСН, а в чеке — "
                              f"{TAXATION_TITLES[receipt.taxation]}", pos.vat.value)
        if receipt.correction is not None:
            check_rate_date(pos.vat, receipt.correction.date, f"{where}.vat")
    if receipt.total > MAX_MONEY:
        raise DomainError("total", "сумма чека больше 99 999 999,99 ₽", format_rub(receipt.total))
    if not receipt.payments:
        raise DomainError("payments", "не указана оплата")
    for i, pay in enumerate(receipt.payments, 1):
        if pay.amount <= 0:
            raise DomainError(f"payments[{i}].amount", "сумма оплаты должна быть больше нуля", format_rub(pay.amount))
    if receipt.paid < receipt.total:
        raise DomainError(
            "payments",
            f"оплачено {format_rub(receipt.paid)} ₽ меньше суммы чека {format_rub(receipt.total)} ₽",
            format_rub(receipt.paid),
        )
    non_cash = sum(p.amount for p in receipt.payments if p.type is not PaymentType.CASH)
    if non_cash > receipt.total:
        raise DomainError(
            "payments",
            "безналичная оплата больше суммы чека: сдача возможна только с наличных",
            format_rub(non_cash),
        )
    if receipt.electronic_only and not receipt.customer_contact:
        raise DomainError("customer_contact", "для чека без печати нужен телефон или e-mail покупателя")
    if receipt.customer_contact:
        check_customer_contact(receipt.customer_contact)
    if receipt.settlement_place:
        check_settlement_place(receipt.settlement_place)
    if receipt.internet:
        # From 01.09.2025 an internet settlement carries 1125, 1008 and 1187 (fiscal-rules.md §5).
        if not receipt.customer_contact:
            raise DomainError("customer_contact", "для расчёта в интернете (тег 1125) нужен телефон или e-mail "
                                                  "покупателя (тег 1008)")
        if not receipt.settlement_place:
            raise DomainError("settlement_place", "для расчёта в интернете (тег 1125) нужно место расчётов — "
                                                  "адрес сайта (тег 1187)")
    if receipt.type.is_correction and receipt.correction is None:
        raise DomainError("correction", "для чека коррекции нужны основание и дата исправляемого расчёта")
    if receipt.correction is not None and receipt.correction.order_number:
        check_device_text(receipt.correction.order_number, "correction.order_number")
    if receipt.cashier_name:
        check_cashier_name(receipt.cashier_name)
    if receipt.cashier_inn and not (receipt.cashier_inn.isdigit() and len(receipt.cashier_inn) == 12):
        raise DomainError("cashier_inn", "ИНН кассира — 12 цифр", receipt.cashier_inn)


def check_cashier_name(value: str, field: str = "cashier_name") -> str:
    """Tag 1021: up to 64 characters a device can take (it prints the cashier on the receipt)."""
    if len(value) > MAX_CASHIER_NAME:
        raise DomainError(field, f"имя кассира длиннее {MAX_CASHIER_NAME} символов", value)
    check_device_text(value, field)
    return value


def check_customer_contact(value: str, field: str = "customer_contact") -> str:
    """Tag 1008: ``+`` and digits, or an e-mail address; 1..64 characters."""
    value = value.strip()
    if not 1 <= len(value) <= 64:
        raise DomainError(field, "телефон или e-mail покупателя: от 1 до 64 символов", value)
    if value.startswith("+"):
        if not value[1:].isdigit() or len(value) < 8:
            raise DomainError(field, "телефон покупателя в виде +79991234567", value)
    elif "@" not in value.strip("@") or " " in value:
        raise DomainError(field, "нужен телефон (+79991234567) или e-mail покупателя", value)
    return value


def check_settlement_place(value: str, field: str = "settlement_place") -> str:
    """Tag 1187: 1..243 characters a device can print (for an internet sale, the site's address)."""
    value = value.strip()
    if not 1 <= len(value) <= MAX_SETTLEMENT_PLACE:
        raise DomainError(field, f"место расчётов: от 1 до {MAX_SETTLEMENT_PLACE} символов", value)
    check_device_text(value, field)
    return value


def spread_discount(amounts: list[int], discount: int) -> list[int]:
    """Spread a receipt discount over position sums so every kopeck is accounted for.

    FFD has no receipt-level discount (fiscal-rules.md §3): each position's sum must already
    include its share. Shares are proportional, rounded down, and the kopecks left over go to
    the largest positions first, so the new sums add up to exactly ``sum(amounts) - discount``.
    """
    total = sum(amounts)
    if discount < 0 or discount > total:
        raise DomainError("discount", "скидка больше суммы чека или отрицательна", format_rub(discount))
    if discount == 0 or total == 0:
        return list(amounts)
    shares = [a * discount // total for a in amounts]
    rest = discount - sum(shares)
    order = sorted(range(len(amounts)), key=lambda i: (-(amounts[i] - shares[i]), i))
    for i in order:
        if rest == 0:
            break
        if amounts[i] - shares[i] > 0:
            shares[i] += 1
            rest -= 1
    return [a - s for a, s in zip(amounts, shares, strict=True)]


def payment_list(
    total: int, default: PaymentType, payments: dict[PaymentType, int] | None = None
) -> tuple[Payment, ...]:
    """Payments for a receipt: the given split, or the whole total by the default type."""
    if payments:
        return tuple(Payment(t, a) for t, a in payments.items() if a)
    return (Payment(default, total),)

