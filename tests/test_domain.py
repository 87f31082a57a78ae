"""Fiscal rules of the domain layer: money, quantities, VAT by date, receipt consistency."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kktapp import domain
from kktapp.domain import (
    DomainError,
    LegacyRateRejected,
    Payment,
    PaymentType,
    Position,
    Receipt,
    SettlementType,
    VatRate,
)

Y2026 = dt.date(2026, 11, 22)
Y2025 = dt.date(2025, 6, 1)


@pytest.mark.parametrize(
    "value, kop",
    [(Decimal("325.12"), 32512), (1950, 195000), ("10,50", 1050), (Decimal("0"), 0), ("0.1", 10)],
)
def test_to_kopecks(value, kop):
    assert domain.to_kopecks(value) == kop


@pytest.mark.parametrize("value, kop", [("33.29667", 3330), (Decimal("1.005"), 101), ("1,004", 100),
                                        (Decimal("99.99000000000001"), 9999), (Decimal("-1.005"), -101), (7, 700)])
def test_to_kopecks_rounds_half_up_only_when_asked(value, kop):
    assert domain.to_kopecks(value, round_half_up=True) == kop
    if domain.parse_roubles(value) * 100 != kop:
        with pytest.raises(DomainError):
            domain.to_kopecks(value)


@pytest.mark.parametrize("value", [1.5, True, "abc", None, Decimal("NaN"), "1e999999"])
def test_rounding_never_takes_what_is_not_a_sum(value):
    with pytest.raises(DomainError):
        domain.to_kopecks(value, round_half_up=True)


@pytest.mark.parametrize("value", [1.5, True, Decimal("1.005"), "abc", None, Decimal("NaN")])
def test_to_kopecks_refuses(value):
    with pytest.raises(DomainError) as err:
        domain.to_kopecks(value, field="Price")
    assert err.value.field == "Price"


def test_quantity_three_decimals():
    assert domain.to_quantity(Decimal("1.125")) == Decimal("1.125")
    for bad in (Decimal("1.0005"), 0, -1, 2.5):
        with pytest.raises(DomainError):
            domain.to_quantity(bad)


def test_position_amount_rounds_half_up():
    assert domain.position_amount(32512, Decimal(6)) == 195072
    assert domain.position_amount(333, Decimal("0.5")) == 167  # 166.5 → 167


@pytest.mark.parametrize(
    "name, rate",
    [
        (22, VatRate.VAT22), ("22", VatRate.VAT22), ("vat22", VatRate.VAT22), ("НДС 22%", VatRate.VAT22),
        (10, VatRate.VAT10), ("nds10", VatRate.VAT10), (0, VatRate.VAT0), ("5", VatRate.VAT5), (7, VatRate.VAT7),
        ("10/110", VatRate.VAT110), ("22/122", VatRate.VAT122), ("5/105", VatRate.VAT105), ("7/107", VatRate.VAT107),
        ("без НДС", VatRate.NONE), ("none", VatRate.NONE), (Decimal("10"), VatRate.VAT10),
    ],
)
def test_parse_vat_today(name, rate):
    assert domain.parse_vat(name, Y2026) is rate


@pytest.mark.parametrize("name", [18, 20, "НДС18", "nds18", "vat20", "20%"])
def test_legacy_general_rate_follows_the_date(name):
    assert domain.parse_vat(name, Y2026) is VatRate.VAT22
    assert domain.parse_vat(name, Y2025) is VatRate.VAT20


def test_legacy_calculated_rate_follows_the_date():
    assert domain.parse_vat("18/118", Y2026) is VatRate.VAT122
    assert domain.parse_vat("20/120", Y2025) is VatRate.VAT120


@pytest.mark.parametrize("kind", [SettlementType.SELL_RETURN, SettlementType.BUY_RETURN,
                                  SettlementType.SELL_RETURN_CORRECTION, SettlementType.BUY_RETURN_CORRECTION])
def test_returns_keep_20_and_20_120_as_given(kind):
    """A 2026 return of a pre-2026 sale is made at 20 % (FNS letter АБ-4-20/11248@)."""
    for accept in (True, False):
        assert domain.parse_vat(20, Y2026, accept_legacy=accept, settlement=kind) is VatRate.VAT20
        assert domain.parse_vat("vat120", Y2026, accept_legacy=accept, settlement=kind) is VatRate.VAT120
        assert domain.parse_vat("20/120", Y2026, accept_legacy=accept, settlement=kind) is VatRate.VAT120
    assert not domain.is_legacy_vat(20, kind) and domain.is_legacy_vat(18, kind)
    assert domain.parse_vat(18, Y2026, settlement=kind) is VatRate.VAT22  # 18 stays an old name
    with pytest.raises(LegacyRateRejected):
        domain.parse_vat(18, Y2026, accept_legacy=False, settlement=kind)


@pytest.mark.parametrize("kind", [None, SettlementType.SELL, SettlementType.BUY, SettlementType.SELL_CORRECTION])
def test_sales_keep_the_legacy_mapping(kind):
    assert domain.parse_vat(20, Y2026, settlement=kind) is VatRate.VAT22
    assert domain.is_legacy_vat(20, kind)
    with pytest.raises(LegacyRateRejected):
        domain.parse_vat(20, Y2026, accept_legacy=False, settlement=kind)


@pytest.mark.parametrize("accept", [True, False])
def test_credit_payment_keeps_20_and_20_120_as_given(accept):
    """A 2025 credit sale paid in 2026 is receipted at 20 % (FNS letter АБ-4-20/11248@, fiscal-rules.md §1)."""
    credit = domain.PaymentMethod.CREDIT_PAYMENT
    assert domain.parse_vat("vat20", Y2026, accept_legacy=accept, payment_method=credit) is VatRate.VAT20
    assert domain.parse_vat(120, Y2026, accept_legacy=accept, payment_method=credit) is VatRate.VAT120
    assert not domain.is_legacy_vat(20, payment_method=credit)
    # Any other 1214 keeps the legacy mapping.
    assert domain.is_legacy_vat(20, payment_method=domain.PaymentMethod.FULL_PAYMENT)
    if accept:
        assert domain.parse_vat(20, Y2026, payment_method=domain.PaymentMethod.FULL_PAYMENT) is VatRate.VAT22


@pytest.mark.parametrize("value, method", [("creditPayment", 7), (7, 7), ("7", 7), ("fullPayment", 4),
                                           ("bogus", None), (99, None), (None, None), (True, None)])
def test_payment_method_of(value, method):
    got = domain.payment_method_of(value)
    assert (int(got) if got is not None else None) == method


@pytest.mark.parametrize("name", ["vat22", 22, "22/122", "vat122"])
def test_22_refused_before_2026(name):
    """A correction of a 2025 settlement is made at that year's rate (fiscal-rules.md §1)."""
    with pytest.raises(DomainError) as err:
        domain.parse_vat(name, Y2025, field="Tax")
    assert err.value.field == "Tax" and "01.01.2026" in err.value.message
    assert domain.parse_vat(name, dt.date(2026, 1, 1)) in (VatRate.VAT22, VatRate.VAT122)


def test_legacy_rate_can_be_refused():
    with pytest.raises(LegacyRateRejected) as err:
        domain.parse_vat("nds18", Y2026, accept_legacy=False, field="Goods.Position_1.Tax")
    assert err.value.field == "Goods.Position_1.Tax"


@pytest.mark.parametrize("name", [13, "vat13", "", None, True, 22.0])
def test_unknown_vat_refused(name):
    with pytest.raises(DomainError):
        domain.parse_vat(name, Y2026)


def test_tag1199_values_are_distinct():
    values = [r.tag1199 for r in VatRate]
    assert len(values) == len(set(values)) and VatRate.VAT22.tag1199 == 11


def _receipt(**kw) -> Receipt:
    pos = Position("Товар", 10000, Decimal(2), 20000, VatRate.VAT22)
    base = dict(type=SettlementType.SELL, positions=(pos,), payments=(Payment(PaymentType.CASH, 20000),))
    base.update(kw)
    return Receipt(**base)


def test_receipt_totals_and_change():
    r = _receipt(payments=(Payment(PaymentType.CASH, 25000),))
    domain.check_receipt(r)
    assert (r.total, r.paid, r.change) == (20000, 25000, 5000)


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"positions": ()}, "positions"),
        ({"payments": (Payment(PaymentType.CASH, 100),)}, "payments"),
        ({"payments": (Payment(PaymentType.ELECTRONIC, 30000),)}, "payments"),
        ({"electronic_only": True}, "customer_contact"),
        ({"customer_contact": "not a contact"}, "customer_contact"),
        ({"type": SettlementType.SELL_CORRECTION}, "correction"),
        ({"cashier_inn": "123"}, "cashier_inn"),
        # fiscal-rules.md §5: an internet settlement (1125) carries 1008 and 1187 (the site).
        ({"internet": True, "settlement_place": "shop.ru"}, "customer_contact"),
        ({"internet": True, "customer_contact": "a@b.ru"}, "settlement_place"),
        ({"settlement_place": "я" * (domain.MAX_SETTLEMENT_PLACE + 1)}, "settlement_place"),
        ({"settlement_place": "shop.ru\x1b"}, "settlement_place"),
        # 5 % and 7 % are УСН rates (fiscal-rules.md §1, [I]).
        ({"positions": (Position("Чай", 100, Decimal(1), 100, VatRate.VAT5),),
          "payments": (Payment(PaymentType.CASH, 100),), "taxation": domain.TaxationSystem.OSN}, "positions[1].vat"),
        # Goods "with a marking code" need the code, which kkt cannot send (fiscal-rules.md §2).
        ({"positions": (Position("Обувь", 100, Decimal(1), 100, VatRate.VAT22, payment_object=33),),
          "payments": (Payment(PaymentType.CASH, 100),)}, "positions[1].payment_object"),
        # A correction of a 2025 settlement at 22 %: whatever the contract, the domain refuses it.
        ({"type": SettlementType.SELL_CORRECTION,
          "correction": domain.Correction(by_order=False, date=Y2025)}, "positions[1].vat"),
        ({"type": SettlementType.SELL_CORRECTION, "positions": (Position("Т", 100, Decimal(1), 100, VatRate.VAT20),),
          "payments": (Payment(PaymentType.CASH, 100),),
          "correction": domain.Correction(by_order=True, date=Y2025, order_number="№1\x1b")},
         "correction.order_number"),
        # Tag 1021: up to 64 characters a device can take.
        ({"cashier_name": "я" * (domain.MAX_CASHIER_NAME + 1)}, "cashier_name"),
        ({"cashier_name": "Иванов\x00"}, "cashier_name"),
    ],
)
def test_check_receipt_names_the_field(kw, field):
    with pytest.raises(DomainError) as err:
        domain.check_receipt(_receipt(**kw))
    assert err.value.field == field


@pytest.mark.parametrize("taxation", [domain.TaxationSystem.USN_INCOME, domain.TaxationSystem.USN_INCOME_OUTCOME, None])
def test_usn_rates_pass_under_usn_or_an_unnamed_system(taxation):
    pos = Position("Чай", 100, Decimal(1), 100, VatRate.VAT7)
    domain.check_receipt(_receipt(positions=(pos,), payments=(Payment(PaymentType.CASH, 100),), taxation=taxation))
    domain.check_receipt(_receipt(cashier_name="я" * domain.MAX_CASHIER_NAME))


def test_an_internet_sale_with_contact_and_site_passes():
    domain.check_receipt(_receipt(internet=True, customer_contact="a@b.ru", settlement_place="https://shop.ru"))
    domain.check_receipt(_receipt(settlement_place="я" * domain.MAX_SETTLEMENT_PLACE))


def test_fields_added_later_leave_old_fingerprints_alone():
    # A retry of a receipt fingerprinted before settlement_place and internet existed is still the
    # same document; set, they change the fingerprint.
    from kktapp.service import fingerprint

    plain = _receipt()
    before = {f: getattr(plain, f) for f in (
        "type", "positions", "payments", "taxation", "customer_contact", "electronic_only", "cashier_name",
        "cashier_inn", "header", "footer", "correction", "test_mode")}
    assert fingerprint(plain) == fingerprint(before)
    assert fingerprint(_receipt(settlement_place="shop.ru")) != fingerprint(plain)
    assert fingerprint(_receipt(internet=True)) != fingerprint(plain)


def test_customer_contact_forms():
    assert domain.check_customer_contact(" buyer@example.ru ") == "buyer@example.ru"
    assert domain.check_customer_contact("+79991234567") == "+79991234567"


@given(
    amounts=st.lists(st.integers(min_value=0, max_value=10_000_000), min_size=1, max_size=30),
    data=st.data(),
)
def test_spread_discount_is_exact_to_the_kopeck(amounts, data):
    discount = data.draw(st.integers(min_value=0, max_value=sum(amounts)))
    spread = domain.spread_discount(amounts, discount)
    assert sum(spread) == sum(amounts) - discount
    assert all(0 <= new <= old for new, old in zip(spread, amounts, strict=True))


def test_spread_discount_refuses_more_than_total():
    with pytest.raises(DomainError):
        domain.spread_discount([100], 101)


def test_fiscal_result_round_trip():
    res = domain.FiscalResult(12, "1234567890", 3, 4, dt.datetime(2026, 11, 22, 10, 0), 195000, "9999")
    assert domain.FiscalResult.from_dict(res.to_dict()) == res


def test_format_rub():
    assert domain.format_rub(195072) == "1950.72" and domain.format_rub(-5) == "-0.05"
