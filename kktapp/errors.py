"""Exceptions shared by every layer, and the service's own result codes.

Each exception carries a numeric ``code`` for the programmer and a Russian ``message`` for
the cashier. Device errors use the device's own code (1..255, the ATOL protocol table in
:mod:`kktapp.atol.errors`); service-level conditions use the codes below, all ≥ 1000 so the
two ranges never collide. HTTP contracts map these to statuses in one place
(:func:`http_status`).
"""

from __future__ import annotations

from .domain import format_rub


class ResultCode:
    """Service-level result codes (device codes are 1..255)."""

    OK = 0
    VALIDATION = 1001
    LINK_LOST = 1002
    FRAME_ERROR = 1003
    DEVICE_BUSY = 1004
    UNKNOWN_OUTCOME = 1005
    TIMEOUT = 1006
    QUEUED = 1007
    CONFLICT = 1009
    UNAUTHORIZED = 1010
    FORBIDDEN = 1011
    NOT_FOUND = 1012
    DISABLED = 1013
    #: The device interrupted the same document again and again without forming it.
    GAVE_UP = 1014
    #: The device's queue is full: the client is told to retry later (503, Retry-After).
    QUEUE_FULL = 1015
    #: The operator cancelled the receipt while it was still queued.
    CANCELLED = 1016
    #: The operator checked the FN (or the OFD) and found an unknown document not fiscalised.
    SETTLED_NOT_FISCALISED = 1017
    INTERNAL = 1099


class KKTError(Exception):
    """Base of everything the service reports to a caller."""

    code: int = ResultCode.INTERNAL
    message: str = "внутренняя ошибка сервиса ККТ"
    http_status: int = 500
    #: HTTP headers every contract sends with this error (Retry-After, WWW-Authenticate).
    headers: dict[str, str] = {}

    def __init__(self, message: str | None = None, *, code: int | None = None) -> None:
        if message is not None:
            self.message = message
        if code is not None:
            self.code = code
        super().__init__(self.message)

    def to_dict(self) -> dict:
        """JSON-ready description: numeric code and Russian text."""
        return {"code": self.code, "message": self.message}


class ValidationFailed(KKTError):
    """Bad input; never reaches a device. ``field`` and ``value`` say what was wrong."""

    code = ResultCode.VALIDATION
    http_status = 422

    def __init__(self, field: str, message: str, value: object = None) -> None:
        self.field = field
        self.value = value
        shown = f" (получено: {_shown(value)})" if value is not None else ""
        super().__init__(f"Ошибка в поле {field}: {message}{shown}")

    def to_dict(self) -> dict:
        """Adds the field and the offending value."""
        data = super().to_dict()
        data["field"] = self.field
        if self.value is not None:
            data["value"] = self.value if isinstance(self.value, (int, str)) else str(self.value)
        return data


def _shown(value: object) -> str:
    """A received value as a cashier reads it: text in «», without Python's escapes unless it
    holds characters that cannot be shown (those are what the error is about)."""
    if isinstance(value, str) and all(ch.isprintable() or ch.isspace() and ch not in "\r\n\t" for ch in value):
        return f"«{value}»"
    return repr(value)


class Conflict(KKTError):
    """The idempotency key was used before with a different document."""

    code = ResultCode.CONFLICT
    http_status = 409
    message = "этот ключ (номер документа) уже использован для другого чека"


class NotFound(KKTError):
    """An unknown device number, job id or key."""

    code = ResultCode.NOT_FOUND
    http_status = 404
    message = "не найдено"


class Disabled(KKTError):
    """The operation is switched off in the configuration."""

    code = ResultCode.DISABLED
    http_status = 403
    message = "операция отключена в настройках сервиса"


class TestShiftClosed(Disabled):
    """A TEST_MODE receipt met a closed shift: opening one is a fiscal document, which test mode
    must not make."""

    message = ("тестовый режим (TEST_MODE): смена на ККТ закрыта, а тестовый чек её не открывает — "
               "открытие смены фискальный документ; откройте смену сами или выключите TEST_MODE")


class LinkError(KKTError):
    """No link with the device: not connected, connection lost, or no answer in time."""

    code = ResultCode.LINK_LOST
    http_status = 503
    message = "нет связи с ККТ"


class FrameError(LinkError):
    """The device's bytes did not form a valid packet (CRC or length)."""

    code = ResultCode.FRAME_ERROR
    message = "ошибка обмена с ККТ (повреждённый пакет)"


class DeviceBusy(LinkError):
    """The device refused the connection: another program holds it."""

    code = ResultCode.DEVICE_BUSY
    message = "ККТ занята другой программой (допускается одно подключение)"


class OutcomeUnknown(KKTError):
    """The device may or may not have fiscalised the document; recovery will settle it."""

    code = ResultCode.UNKNOWN_OUTCOME
    http_status = 503
    message = "результат чека пока неизвестен: связь прервалась, сервис проверит ККТ и завершит чек сам"


#: Cash jobs (the drivers' ``counted_kinds``) → their names in an operator's message.
CASH_KIND_NAMES = {"cash_in": "внесение", "cash_out": "выплата"}


def drawer_after(kind: str, before: int, amount: int) -> int:
    """The cash in the drawer (kopecks) after the cash job ``kind`` of ``amount`` ran on
    ``before``: a cash-in adds it, a cash-out takes it."""
    return before + amount if kind == "cash_in" else before - amount


class CashOutcomeUnknown(OutcomeUnknown):
    """A lost cash in/out answer that the driver's counter cannot settle (ATOL: the drawer,
    Shtrih-M: the operating document number): the operator decides, it is never sent again.
    ``evidence`` says what the counter shows."""

    def __init__(self, kind: str, amount: int, evidence: str) -> None:
        what = CASH_KIND_NAMES.get(kind, "операция с наличными")
        super().__init__(
            f"{what} {format_rub(amount)} ₽: по ККТ нельзя установить, выполнена ли операция: {evidence}. "
            "Сервис её не повторяет: сверьте наличные и документы ККТ и решите сами")

    @classmethod
    def drawer(cls, kind: str, amount: int, before: int, now: int, cause: str, lead: str = "") -> CashOutcomeUnknown:
        """The drawer held ``before`` and now holds ``now``, not what the job would have left
        (:func:`drawer_after`); ``cause`` says what moved it instead, ``lead`` what came first."""
        return cls(kind, amount, (
            f"{lead}наличных в ККТ было {format_rub(before)} ₽, после неё было бы "
            f"{format_rub(drawer_after(kind, before, amount))} ₽, а сейчас {format_rub(now)} ₽ ({cause})"))


class NotThisReceipt(OutcomeUnknown):
    """The FN document an operator named for a receipt settled by hand is not that receipt's
    (the drivers' ``receipt_document``); one constructor per reason, the texts in one place."""

    @classmethod
    def missing(cls, fd: int, last: int) -> NotThisReceipt:
        return cls(f"в ФН нет документа ФД {fd}: последний документ ФН — ФД {last}")

    @classmethod
    def unreadable(cls, fd: int, reason: str) -> NotThisReceipt:
        return cls(f"ФН не отдаёт документ ФД {fd} ({reason})")

    @classmethod
    def not_a_receipt(cls, fd: int, doc_type: int) -> NotThisReceipt:
        return cls(f"ФД {fd} в ФН — не чек (тип документа {doc_type})")

    @classmethod
    def another(cls, fd: int, total: int, sign: int, want_total: int, want_sign: int) -> NotThisReceipt:
        """A receipt of ``total`` and settlement sign (1054) ``sign``, not ``want_*``."""
        return cls(f"ФД {fd} в ФН — другой чек: {format_rub(total)} ₽, признак расчёта {sign}, "
                   f"а этот чек — {format_rub(want_total)} ₽, признак расчёта {want_sign}")


class NotSent(KKTError):
    """The job was refused before its first byte reached the device: certainly not fiscalised.

    A value the device's command cannot carry (validation should have caught it) or any other
    failure while the commands were being prepared.
    """

    code = ResultCode.VALIDATION
    http_status = 422
    message = "документ не отправлен в ККТ: данные не помещаются в команды ККТ"


class ReturnCorrectionNotInFfd(NotSent):
    """A return correction (1054 = 2 or 4) on a register working by FFD 1.05, whose corrections are
    of 1054 = 1 or 3 only (fiscal-rules.md §2); found from the FFD version read at connecting."""

    field = "type"

    def __init__(self, ffd: str) -> None:
        super().__init__(
            f"Ошибка в поле {self.field}: ККТ работает по ФФД {ffd}, а коррекция возврата есть только в ФФД 1.2 "
            "(в протоколе KKM Server — TypeCheck 3 и 13); по ФФД 1.05 пробейте коррекцию прихода или расхода. "
            "Чек не отправлен в ККТ"
        )

    def to_dict(self) -> dict:
        """Adds the field, as a validation error does."""
        return {**super().to_dict(), "field": self.field}


class TaxationNotRegistered(NotSent):
    """The receipt names a taxation system (tag 1055) the register is not registered for.

    Found from the registration before the receipt is opened, so the device never refuses it
    halfway through the receipt. The field is named for every contract: ``taxation`` in the
    JSON API, ``TaxVariant`` in KKM Server's, the TAXATION setting where the caller names none.
    """

    field = "taxation"

    def __init__(self, taxation: str, registered: str) -> None:
        super().__init__(
            f"Ошибка в поле {self.field}: ККТ не зарегистрирована на систему налогообложения «{taxation}» "
            f"(тег 1055; в протоколе KKM Server — TaxVariant, по умолчанию — настройка TAXATION); "
            f"в регистрации ККТ: {registered}. Чек не отправлен в ККТ"
        )

    def to_dict(self) -> dict:
        """Adds the field, as a validation error does."""
        return {**super().to_dict(), "field": self.field}


class GaveUp(KKTError):
    """Recovery found the same document unformed after every one of several attempts.

    The FN was checked each time (no document), so the job is failed and the queue moves on;
    the operator looks at the device and the document and sends it again.
    """

    code = ResultCode.GAVE_UP
    http_status = 502
    message = (
        "ККТ {attempts} раз(а) подряд прервала этот документ, не пробив его (ФН проверен: документа нет). "
        "Документ снят с очереди, следующие чеки пробиваются. Проверьте ККТ и данные документа и отправьте его снова"
    )

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts
        super().__init__(self.message.format(attempts=attempts))


class QueueFull(KKTError):
    """The device's queue holds as many documents as it may: try again later (Retry-After)."""

    code = ResultCode.QUEUE_FULL
    http_status = 503
    message = "очередь ККТ переполнена: касса не успевает; повторите чек позже с тем же номером документа"

    def __init__(self, retry_after: int) -> None:
        super().__init__()
        self.headers = {"Retry-After": str(int(retry_after))}


class Timeout(KKTError):
    """The caller's wait ran out; the job goes on and can be asked about later."""

    code = ResultCode.TIMEOUT
    http_status = 504
    message = "ККТ не ответила за отведённое время; чек остаётся в очереди"


class Queued(KKTError):
    """Accepted and journalled, not fiscalised yet: the service will fiscalise it by itself.

    Not a failure: 202 Accepted. A client must not fiscalise the document another way, and
    asks again with the same key later to get the final answer.
    """

    code = ResultCode.QUEUED
    http_status = 202
    message = (
        "чек в очереди, будет пробит автоматически — не пробивайте его вручную; "
        "повторите запрос с тем же номером документа позже, чтобы узнать результат"
    )


class Cancelled(KKTError):
    """An operator cancelled the receipt before it reached the device; its key is free again."""

    code = ResultCode.CANCELLED
    http_status = 409
    message = "чек отменён оператором до отправки в ККТ: он не пробит"


class NotCancellable(Conflict):
    """Only a queued receipt can be cancelled; the message says why this one cannot."""

    message = "чек нельзя отменить"


class SettledNotFiscalised(KKTError):
    """An operator settled an unknown document as not fiscalised; its key is free again.

    Not the cancel code (1016): a cancelled document answers a repeat with the cancellation,
    while this one was meant to be fiscalised, so a repeat is a new attempt.
    """

    code = ResultCode.SETTLED_NOT_FISCALISED
    http_status = 409
    message = "снят оператором: документ не пробит"


class NotSettleable(Conflict):
    """Only a job whose outcome is unknown can be settled by hand; the message says why not."""

    message = "результат задания нельзя установить вручную"


class DeviceError(KKTError):
    """The device executed the command and answered with an error code.

    ``step`` names the failing step of a pipelined batch (e.g. "позиция 3").
    """

    http_status = 502

    def __init__(self, code: int, message: str, *, ext: int = 0, step: str = "", command: int | None = None) -> None:
        self.ext = ext
        self.step = step
        self.command = command
        text = with_step(message, step)
        super().__init__(text, code=code)
        self.device_message = message

    def to_dict(self) -> dict:
        """Adds the extended code and the failing step."""
        data = super().to_dict()
        if self.ext:
            data["ext_code"] = self.ext
        if self.step:
            data["step"] = self.step
        return data


def with_step(message: str, step: object) -> str:
    """A device error's text with the failing step named once: "Нет бумаги (шаг: позиция 3)"."""
    return f"{message} (шаг: {step})" if step and str(step) not in message else message


def stored_error_text(error: dict | None) -> str:
    """A journalled job error (``DeviceError.to_dict()`` and the like) as the cashier's line."""
    error = error or {}
    return with_step(str(error.get("message") or KKTError.message), error.get("step"))


def http_status(exc: BaseException) -> int:
    """HTTP status that tells the class of a failure (200/4xx/5xx) for any contract."""
    return getattr(exc, "http_status", 500)
