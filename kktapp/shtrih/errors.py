"""Shtrih-M error codes (the error byte of an answer) and their Russian texts for the cashier.

With a fiscal storage (FN) present, codes 0x01-0x30 mean FN errors, not the old fiscal-memory
meanings: shtrih-protocol.md §7 [C: opos GetErrorTextFS/FSGetErrorTextRus; pyshtrih
Error.fs_codes; e-kiosk Online/ShtrihFROnlineConstants.h]. Codes marked [S] in the table come
from opos alone. :func:`device_error` is the only place that turns a code into
:class:`kktapp.errors.DeviceError`.
"""

from __future__ import annotations

import enum

from ..errors import DeviceError


class ErrorCode(enum.IntEnum):
    """Error codes by name (driver and emulator use these, never bare numbers)."""

    OK = 0x00
    FN_UNKNOWN_COMMAND = 0x01
    FN_STATE = 0x02
    FN_FAILURE = 0x03
    FN_CRYPTO = 0x04
    FN_EXPIRED = 0x05
    FN_ARCHIVE_FULL = 0x06
    FN_BAD_DATETIME = 0x07
    FN_NO_DATA = 0x08
    FN_BAD_PARAMETER = 0x09
    FN_BAD_COMMAND = 0x0A  # [S] opos
    FN_TAGS_NOT_ALLOWED = 0x0B  # [S] opos
    FN_DUPLICATE_DATA = 0x0C  # [S] opos
    FN_MISSING_DATA = 0x0D  # [S] opos
    FN_TOO_MANY_ITEMS = 0x0E  # [S] opos
    FN_TLV_TOO_LARGE = 0x10
    FN_NO_TRANSPORT = 0x11
    FN_CRYPTO_EXHAUSTED = 0x12
    FN_STORAGE_EXHAUSTED = 0x14
    FN_OFD_WAIT_EXHAUSTED = 0x15
    FN_SHIFT_EXPIRED = 0x16
    FN_TIME_DIFFERENCE = 0x17
    FN_BAD_TAG = 0x18  # [S] opos
    FN_TAG_MISMATCH = 0x19  # [S] opos
    FN_OFD_REFUSED = 0x20
    FN_NO_LINK = 0x21  # [S] opos
    FN_NOT_ANSWERING = 0x30
    BAD_PARAMETERS = 0x33
    NOT_SUPPORTED = 0x37
    SHIFT_OPEN = 0x3C  # [S] e-kiosk, FN-era firmware
    SHIFT_CLOSED = 0x3D
    PAYMENTS_LESS_THAN_TOTAL = 0x45
    NO_CASH = 0x46
    RECEIPT_OPEN = 0x4A
    SHIFT_EXPIRED = 0x4E
    WRONG_PASSWORD = 0x4F
    PRINTING_PREVIOUS = 0x50
    RECEIPT_CLOSED = 0x55
    WAITING_CONTINUE = 0x58
    WRONG_OPERATION = 0x5E
    NO_PAPER = 0x6B
    CUTTER_ERROR = 0x71
    WRONG_SUBMODE = 0x72
    WRONG_MODE = 0x73
    BAD_DATE = 0x7D
    ZERO_TOTAL = 0x8E
    CONFIRM_DATETIME = 0xC0
    NO_PRINTER = 0xC8


MESSAGES: dict[int, str] = {
    ErrorCode.OK: "Ошибок нет",
    ErrorCode.FN_UNKNOWN_COMMAND: "ФН: неизвестная команда, неверный формат посылки или неизвестные параметры",
    ErrorCode.FN_STATE: "Неверное состояние ФН",
    ErrorCode.FN_FAILURE: "Отказ ФН",
    ErrorCode.FN_CRYPTO: "Отказ криптографического сопроцессора ФН",
    ErrorCode.FN_EXPIRED: "Закончен срок эксплуатации ФН",
    ErrorCode.FN_ARCHIVE_FULL: "Архив ФН переполнен",
    ErrorCode.FN_BAD_DATETIME: "В ФН переданы неверные дата или время",
    ErrorCode.FN_NO_DATA: "В ФН нет запрошенных данных",
    ErrorCode.FN_BAD_PARAMETER: "ФН: некорректное значение параметров команды",
    ErrorCode.FN_BAD_COMMAND: "ФН: некорректная команда",
    ErrorCode.FN_TAGS_NOT_ALLOWED: "ФН: недопустимые реквизиты",
    ErrorCode.FN_DUPLICATE_DATA: "ФН: дублирование данных",
    ErrorCode.FN_MISSING_DATA: "ФН: отсутствуют данные, необходимые для корректного учёта",
    ErrorCode.FN_TOO_MANY_ITEMS: "ФН: количество позиций в документе превысило допустимый предел",
    ErrorCode.FN_TLV_TOO_LARGE: "ФН: превышение размеров TLV-данных",
    ErrorCode.FN_NO_TRANSPORT: "ФН: нет транспортного соединения",
    ErrorCode.FN_CRYPTO_EXHAUSTED: "ФН: исчерпан ресурс криптопроцессора",
    ErrorCode.FN_STORAGE_EXHAUSTED: "ФН: исчерпан ресурс хранения",
    ErrorCode.FN_OFD_WAIT_EXHAUSTED: "ФН: исчерпан ресурс ожидания передачи сообщения в ОФД",
    ErrorCode.FN_SHIFT_EXPIRED: "ФН: продолжительность смены более 24 часов",
    ErrorCode.FN_TIME_DIFFERENCE: "ФН: неверная разница во времени между двумя операциями",
    ErrorCode.FN_BAD_TAG: "ФН: некорректный реквизит",
    ErrorCode.FN_TAG_MISMATCH: "ФН: реквизит не соответствует установкам при регистрации",
    ErrorCode.FN_OFD_REFUSED: "ФН: сообщение от ОФД не может быть принято",
    ErrorCode.FN_NO_LINK: "Нет связи с ФН",
    ErrorCode.FN_NOT_ANSWERING: "ФН не отвечает",
    ErrorCode.BAD_PARAMETERS: "Некорректные параметры в команде",
    ErrorCode.NOT_SUPPORTED: "Команда не поддерживается в данной реализации ККТ",
    ErrorCode.SHIFT_OPEN: "Смена открыта — операция невозможна",
    ErrorCode.SHIFT_CLOSED: "Смена не открыта — операция невозможна",
    ErrorCode.PAYMENTS_LESS_THAN_TOTAL: "Сумма всех видов оплаты меньше итога чека",
    ErrorCode.NO_CASH: "Не хватает наличности в кассе",
    ErrorCode.RECEIPT_OPEN: "Открыт чек — операция невозможна",
    ErrorCode.SHIFT_EXPIRED: "Смена превысила 24 часа — снимите Z-отчёт",
    ErrorCode.WRONG_PASSWORD: "Неверный пароль",
    ErrorCode.PRINTING_PREVIOUS: "Идёт печать результатов выполнения предыдущей команды",
    ErrorCode.RECEIPT_CLOSED: "Чек закрыт — операция невозможна",
    ErrorCode.WAITING_CONTINUE: "Ожидание команды продолжения печати",
    ErrorCode.WRONG_OPERATION: "Некорректная операция",
    ErrorCode.NO_PAPER: "Нет чековой ленты",
    ErrorCode.CUTTER_ERROR: "Ошибка отрезчика",
    ErrorCode.WRONG_SUBMODE: "Команда не поддерживается в данном подрежиме",
    ErrorCode.WRONG_MODE: "Команда не поддерживается в данном режиме",
    ErrorCode.BAD_DATE: "Неверный формат даты",
    ErrorCode.ZERO_TOTAL: "Нулевой итог чека",
    ErrorCode.CONFIRM_DATETIME: "Контроль даты и времени: подтвердите дату и время",
    ErrorCode.NO_PRINTER: "Нет связи с принтером или отсутствуют импульсы от таходатчика",
}

#: Printer trouble: the document may be fiscalised while its paper copy is owed.
PRINTER_CODES = frozenset({ErrorCode.NO_PAPER, ErrorCode.CUTTER_ERROR, ErrorCode.NO_PRINTER})
#: "Shift over 24 h" from the device and from the FN.
SHIFT_EXPIRED_CODES = frozenset({ErrorCode.SHIFT_EXPIRED, ErrorCode.FN_SHIFT_EXPIRED})


def error_text(code: int) -> str:
    """Russian text of an error code."""
    return MESSAGES.get(code, f"Ошибка ККТ Штрих-М {code:#04x}")


def device_error(code: int, *, step: str = "", command: int | None = None) -> DeviceError:
    """The exception for an error code, with the Russian text for the cashier."""
    return DeviceError(code, error_text(code), step=step, command=command)
