"""ATOL device error codes (the ``err`` byte of ``55 err ext``) and their texts for the cashier.

Codes come from atol-protocol.md §3.1 (atol4j's table); the one code this project invents,
"shift closed", is defined in :mod:`.model`. :func:`device_error` is the only place that turns
a code into :class:`kktapp.errors.DeviceError`.
"""

from __future__ import annotations

import enum

from ..errors import DeviceError
from . import model


class ErrorCode(enum.IntEnum):
    """Device error codes by name (driver and emulator use these, never bare numbers)."""

    OK = 0x00
    BAD_PRICE = 0x08
    BAD_QUANTITY = 0x0A
    BAD_FORMAT = 0x13
    BAD_LENGTH = 0x14
    MODE_BLOCKED = 0x1E
    CHECK_DATETIME = 0x1F
    DATETIME_BEFORE_FN = 0x20
    WRONG_MODE = 0x66
    NO_PAPER = 0x67
    NO_PRINTER = 0x68
    PRINTER_MECHANICAL = 0x69
    BAD_RECEIPT_TYPE = 0x6A
    PAYMENTS_LESS_THAN_TOTAL = 0x72
    NOT_SUPPORTED = 0x7A
    BAD_SECTION = 0x7D
    BAD_PAYMENT_TYPE = 0x7E
    RECEIPT_OVERFLOW = 0x81
    ANNUL_RECEIPT_OPEN = 0x82
    SUM_LESS_THAN_TOTAL = 0x86
    RETURN_RECEIPT_OPEN = 0x87
    SHIFT_EXPIRED = 0x88
    SALE_RECEIPT_OPEN = 0x89
    WRONG_PASSWORD = 0x8C
    NO_CASH = 0x98
    RECEIPT_CLOSED = 0x9A
    RECEIPT_OPEN = 0x9B
    SHIFT_OPEN = 0x9C
    SHIFT_CLOSED = model.SHIFT_CLOSED_ERROR  # [U] never sent by a real device (model.py)
    ALREADY_CLOSED = model.ALREADY_CLOSED_ERROR
    PASSWORD_NOT_ALLOWED = 0xA4
    NOT_FISCAL = 0xA8
    NO_DOCUMENT = 0xAA
    FN_EXCHANGE = 0xBA
    HEAD_OVERHEAT = 0xD1
    FN_I2C = 0xD2
    FN_FORMAT = 0xD3
    FN_STATE = 0xD4
    FN_FATAL = 0xD5
    FN_CRYPTO = 0xD6
    FN_EXPIRED = 0xD7
    FN_ARCHIVE_FULL = 0xD8
    FN_BAD_DATETIME = 0xD9
    FN_NO_DATA = 0xDA
    FN_OVERFLOW = 0xDB
    FN_NO_TRANSPORT = 0xE9
    FN_CRYPTO_EXHAUSTED = 0xEA
    FN_OFD_STORAGE_FULL = 0xEB
    FN_UNSENT = 0xED
    FN_SEE_REGISTER_55 = 0xEE
    FN_OFD_WAIT_EXHAUSTED = 0xEF
    FN_SHIFT_EXPIRED = 0xF0
    FN_TIME_DIFFERENCE = 0xF1
    FN_BAD_COMMAND = 0xF2
    RECEIPT_TOO_LARGE = 0xF6


MESSAGES: dict[int, str] = {
    ErrorCode.OK: "Ошибок нет",
    ErrorCode.BAD_PRICE: "Неверная цена (сумма)",
    ErrorCode.BAD_QUANTITY: "Неверное количество",
    ErrorCode.BAD_FORMAT: "Неверный формат данных",
    ErrorCode.BAD_LENGTH: "Неверная длина данных",
    ErrorCode.MODE_BLOCKED: "Вход в режим заблокирован",
    ErrorCode.CHECK_DATETIME: "Проверьте дату и время ККТ",
    ErrorCode.DATETIME_BEFORE_FN: "Дата и время в ККТ меньше, чем в фискальном накопителе",
    ErrorCode.WRONG_MODE: "Команда не выполняется в этом режиме ККТ",
    ErrorCode.NO_PAPER: "Нет бумаги",
    ErrorCode.NO_PRINTER: "Нет связи с принтером",
    ErrorCode.PRINTER_MECHANICAL: "Механическая ошибка печатающего устройства",
    ErrorCode.BAD_RECEIPT_TYPE: "Неверный тип чека",
    ErrorCode.PAYMENTS_LESS_THAN_TOTAL: "Сумма оплат меньше суммы чека",
    ErrorCode.NOT_SUPPORTED: "Эта модель ККТ не может выполнить команду",
    ErrorCode.BAD_SECTION: "Неверный номер секции",
    ErrorCode.BAD_PAYMENT_TYPE: "Неверный вид оплаты",
    ErrorCode.RECEIPT_OVERFLOW: "Переполнение суммы чека",
    ErrorCode.ANNUL_RECEIPT_OPEN: "Открыт чек аннулирования — операция невозможна",
    ErrorCode.SUM_LESS_THAN_TOTAL: "Внесённая сумма меньше суммы чека",
    ErrorCode.RETURN_RECEIPT_OPEN: "Открыт чек возврата — операция невозможна",
    ErrorCode.SHIFT_EXPIRED: "Смена превысила 24 часа",
    ErrorCode.SALE_RECEIPT_OPEN: "Открыт чек продажи — операция невозможна",
    ErrorCode.WRONG_PASSWORD: "Неверный пароль",
    ErrorCode.NO_CASH: "В ККТ нет наличных для выплаты",
    ErrorCode.RECEIPT_CLOSED: "Чек закрыт — операция невозможна",
    ErrorCode.RECEIPT_OPEN: "Чек открыт — операция невозможна",
    ErrorCode.SHIFT_OPEN: "Смена открыта — операция невозможна",
    ErrorCode.SHIFT_CLOSED: "Смена закрыта — операция невозможна",
    ErrorCode.ALREADY_CLOSED: "Смена уже закрыта (повторное гашение невозможно)",
    ErrorCode.PASSWORD_NOT_ALLOWED: "Недопустимый пароль",
    ErrorCode.NOT_FISCAL: "ККТ не фискализирована",
    ErrorCode.NO_DOCUMENT: "Нет документа или отчёта для печати",
    ErrorCode.FN_EXCHANGE: "Ошибка обмена с фискальным накопителем",
    ErrorCode.HEAD_OVERHEAT: "Перегрев печатающей головки",
    ErrorCode.FN_I2C: "Ошибка обмена с ФН на уровне интерфейса",
    ErrorCode.FN_FORMAT: "Ошибка формата передачи данных ФН",
    ErrorCode.FN_STATE: "Неверное состояние ФН",
    ErrorCode.FN_FATAL: "Неисправимая ошибка ФН",
    ErrorCode.FN_CRYPTO: "Ошибка криптографического сопроцессора ФН",
    ErrorCode.FN_EXPIRED: "Исчерпан временной ресурс ФН",
    ErrorCode.FN_ARCHIVE_FULL: "Архив ФН переполнен",
    ErrorCode.FN_BAD_DATETIME: "В ФН переданы неверные дата или время",
    ErrorCode.FN_NO_DATA: "В ФН нет запрошенных данных",
    ErrorCode.FN_OVERFLOW: "Переполнение итога в ФН",
    ErrorCode.FN_NO_TRANSPORT: "Нет транспортного соединения с ОФД",
    ErrorCode.FN_CRYPTO_EXHAUSTED: "Исчерпан ресурс криптопроцессора ФН",
    ErrorCode.FN_OFD_STORAGE_FULL: "Исчерпан ресурс хранения документов для ОФД",
    ErrorCode.FN_UNSENT: "В ФН есть неотправленные в ОФД документы",
    ErrorCode.FN_SEE_REGISTER_55: "Ошибка ФН (подробный код — в регистре 55)",
    ErrorCode.FN_OFD_WAIT_EXHAUSTED: "Исчерпан ресурс ожидания передачи сообщения в ОФД",
    ErrorCode.FN_SHIFT_EXPIRED: "Смена в ФН превысила 24 часа",
    ErrorCode.FN_TIME_DIFFERENCE: "Неверная разница во времени между двумя операциями ФН",
    ErrorCode.FN_BAD_COMMAND: "Неверная команда для ФН",
    ErrorCode.RECEIPT_TOO_LARGE: "Слишком большой чек",
}

#: Extended codes (the ``ext`` byte) that change the meaning of a few errors.
EXT_MESSAGES: dict[int, dict[int, str]] = {
    ErrorCode.RECEIPT_TOO_LARGE: {
        1: "Неверная версия ФФД",
        3: "Внутренняя ошибка ККТ",
        4: "Параметр доступен только для чтения",
    },
}


#: [S K] Extended codes behind error 0xEE, read from register 0x37 (55); K's texts.
EXTENDED_MESSAGES: dict[int, str] = {
    0x0101: "Недопустимо более одной регистрации в чеке коррекции",
    0x0103: "Некорректная система налогообложения",
    0x0104: "Недопустимый номер ставки налога",
    0x0105: "Недопустимый тип оплаты товара",
    0x0106: "Недопустимый тип кода товара",
    0x0107: "Недопустима регистрация подакцизного товара",
    0x0108: "При передаче налога на единицу запрещены скидки на позицию",
    0x010A: "Система налогообложения отличается от той, с которой открыт чек",
    0x0201: "Реквизит уже был записан в чеке, повтор запрещён",
    0x0202: "Запись реквизитов запрещена в этом режиме ФН",
    0x0205: "Недопустимое сочетание реквизитов",
    0x0206: "Не задан реквизит, необходимый для операции",
    0x0207: "Невозможно записать данные в буфер позиции (не была подана команда EAh)",
    0x0208: "Невозможно записать реквизит чека: начато формирование позиции (была подана команда EAh)",
}
EXT_MESSAGES[ErrorCode.FN_SEE_REGISTER_55] = EXTENDED_MESSAGES


def error_text(code: int, ext: int = 0) -> str:
    """Russian text of a device error (with its extended meaning when known).

    For 0xEE ``ext`` is the 2-byte extended code of register 0x37 when the driver read it.
    """
    text = MESSAGES.get(code, f"Ошибка ККТ {code:#04x}")
    detail = EXT_MESSAGES.get(code, {}).get(ext)
    if code == ErrorCode.FN_SEE_REGISTER_55 and ext:
        text = "Ошибка ФН"
        detail = detail or f"расширенный код {ext:#06x}"
    return f"{text}: {detail}" if detail else text


def device_error(code: int, ext: int = 0, *, step: str = "", command: int | None = None) -> DeviceError:
    """The exception for a device error code, with the Russian text for the cashier."""
    return DeviceError(code, error_text(code, ext), ext=ext, step=step, command=command)
