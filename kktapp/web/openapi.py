"""OpenAPI 3 description of the JSON API, built from the marshmallow schemas themselves.

Component schemas are generated from :mod:`kktapp.web.schemas` (field types, limits, enums,
``metadata`` descriptions), so a field added to a schema appears here without a second edit.
The path table below is the one hand-written part; tests/test_openapi.py keeps it equal to the
blueprint's routes, validates the request examples with the schemas and checks real answers
against the documented fields. Served at GET /api/v1/openapi.json.
"""

from __future__ import annotations

import functools
from typing import Any

from marshmallow import Schema, fields, missing, validate

import kktapp
from kktapp.web import fields as kfields
from kktapp.web import schemas as s

PREFIX = "/api/v1"

DESCRIPTION = """\
JSON API сервиса фискализации kkt (ККТ АТОЛ, 54-ФЗ).

**Деньги.** В запросах — рубли: число JSON или строка, не больше двух знаков после точки
(`150.5`, `"150.50"`). В ответах — целые **копейки** (`"total": 15050`), как их считает
фискальный накопитель: никаких округлений.

**Задания.** Каждая операция встаёт в очередь своей кассы. Параметр `?wait=секунды` (по
умолчанию API_DEFAULT_WAIT из настроек) — сколько ждать результата: успели — 200 и задание;
не успели — 202 и заголовок `Location: /api/v1/jobs/{id}`, где результат появится позже;
ошибка — HTTP-статус класса ошибки: 422 данные и 409 ключ занят — объект `{"error": {...}}`,
задание не создано; 502 отказ ККТ и 503 нет связи — само задание с полем `error`. В обоих
случаях `error` — это `{"code", "message"}`: код и текст по-русски.

**Идемпотентность.** Передавайте заголовок `Idempotency-Key` (или поле `id` в чеке): повтор с
тем же ключом и тем же содержимым вернёт то же задание и никогда не пробьёт второй чек; тот же
ключ с другим содержимым — 409. Без ключа повторы не распознаются.

**Доступ.** HTTP Basic. Роль «кассир» (cashier): чеки, печать, внесение и выплата, открытие
смены, состояние. Роль «администратор» (admin): ещё X- и Z-отчёты, отчёт о текущем состоянии
расчётов, отмена чека, ручное установление результата документа и сбросы ККТ.
Пять неудачных входов подряд — 429 с Retry-After.
"""

#: (method, Flask rule under PREFIX, role or None for public, operationId, summary, request schema or None,
#:  example request or None, success schema, is a queued job)
OPERATIONS: list[tuple[str, str, str | None, str, str, type[Schema] | None, dict | None, type[Schema], bool]] = [
    ("get", "/devices", "cashier", "listDevices", "Список касс и их последнее известное состояние",
     None, None, s.DeviceListSchema, False),
    ("get", "/devices/<int:device>/status", "cashier", "deviceStatus",
     "Состояние кассы с ККТ: дата и время, смена, ФН и ОФД, денежные счётчики, бумага",
     None, None, s.DeviceStatusSchema, False),
    ("get", "/devices/<int:device>/snapshot", "cashier", "deviceSnapshot",
     "Последнее сохранённое состояние кассы (без обращения к ККТ)", None, None, s.DeviceSnapshotSchema, False),
    ("post", "/devices/<int:device>/shift/open", "cashier", "openShift", "Открыть смену", None, None,
     s.JobSchema, True),
    ("post", "/devices/<int:device>/shift/x-report", "admin", "xReport", "X-отчёт (без гашения)", None, None,
     s.JobSchema, True),
    ("post", "/devices/<int:device>/shift/close", "admin", "closeShift", "Z-отчёт: закрыть смену", None, None,
     s.JobSchema, True),
    ("post", "/devices/<int:device>/settlement-report", "admin", "settlementReport",
     "Отчёт о текущем состоянии расчётов (фискальный документ ФН)", None, None, s.JobSchema, True),
    ("post", "/devices/<int:device>/cash-in", "cashier", "cashIn", "Внесение наличных", s.CashSchema,
     {"amount": 1000}, s.JobSchema, True),
    ("post", "/devices/<int:device>/cash-out", "cashier", "cashOut", "Выплата наличных", s.CashSchema,
     {"amount": "250.50"}, s.JobSchema, True),
    ("post", "/devices/<int:device>/print", "cashier", "printText", "Печать нефискального документа",
     s.PrintSchema,
     {"lines": [{"text": "Магазин «Ромашка»", "bold": True, "align": "center", "double_height": True},
                "Спасибо за покупку!", {"text": "www.example.ru", "underline": True, "align": "right"}]},
     s.JobSchema, True),
    ("post", "/devices/<int:device>/reprint-last", "cashier", "reprintLast",
     "Повторить печать последнего документа (после окончания бумаги)", None, None, s.JobSchema, True),
    ("post", "/devices/<int:device>/cancel-receipt", "admin", "cancelReceipt",
     "Отменить чек, оставшийся открытым в ККТ", None, None, s.JobSchema, True),
    ("post", "/devices/<int:device>/reset-summary", "admin", "resetSummary",
     "Обнулить счётчики ККТ (только при ALLOW_DEVICE_RESET = True)", None, None, s.JobSchema, True),
    ("post", "/devices/<int:device>/tech-reset", "admin", "techReset",
     "Технологическое обнуление ККТ (только при ALLOW_DEVICE_RESET = True)", None, None, s.JobSchema, True),
    ("post", "/receipts", "cashier", "createReceipt", "Пробить чек: приход, возврат, расход, коррекция",
     s.ReceiptSchema,
     {
         "id": "order-2026-000123",
         "type": "sell",
         "device": 1,
         "header": [{"text": "Заказ № 123", "bold": True, "align": "center"}],
         "items": [
             {"name": "Чай чёрный, 100 г", "price": 250, "quantity": 2, "tax": "vat22",
              "payment_object": "commodity", "unit": "piece"},
             {"name": "Доставка", "price": "199.90", "tax": "vat22", "payment_object": "service", "discount": 10},
         ],
         "discount": "0.90",
         "payments": [{"type": "electronic", "amount": 689}],
         "cashier": {"name": "Иванова А. А.", "inn": "500100732259"},
         "customer_contact": "buyer@example.ru",
         "footer": ["Спасибо за покупку!"],
     },
     s.JobSchema, True),
    ("get", "/receipts", "cashier", "listReceipts",
     "Список чеков: поиск по номеру документа, ключу, тексту; фильтры по состоянию, кассе, датам",
     None, None, s.ReceiptListSchema, False),
    ("post", "/receipts/<job_id>/cancel", "admin", "cancelQueuedReceipt",
     "Отменить чек, который ещё в очереди (409 с причиной, если он уже мог попасть в ККТ)",
     None, None, s.ReceiptRowSchema, False),
    ("get", "/receipts/<job_id>", "cashier", "getReceipt", "Состояние и результат чека", None, None,
     s.JobSchema, False),
    ("get", "/jobs/<job_id>", "cashier", "getJob", "Состояние и результат любого задания", None, None,
     s.JobSchema, False),
    ("post", "/jobs/<job_id>/settle", "admin", "settleJob",
     "Установить вручную результат документа, который ККТ не может подтвердить (только state=unknown; "
     "409 иначе): fiscalised=true с номером ФД из ФН или кабинета ОФД, или false — документ не пробит",
     s.SettleSchema, {"fiscalised": True, "fiscal_document_number": 1234, "fiscal_sign": "3512874106"},
     s.JobSchema, False),
    ("get", "/goods", "cashier", "listGoods", "Каталог товаров магазина (из файлов товаров 1С)", None, None,
     s.GoodsListSchema, False),
    ("get", "/openapi.json", None, "openapi", "Это описание API (OpenAPI 3)", None, None, None, False),  # type: ignore
]

#: Query parameters of operations that take more than the common ones.
QUERY_PARAMS: dict[str, list[dict]] = {
    "listReceipts": [
        {"name": "state", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "состояние или несколько через запятую: queued, sending, unknown, done, failed"},
        {"name": "device", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1},
         "description": "номер кассы"},
        {"name": "q", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 200},
         "description": "поиск: номер документа (DocNumber), ключ, текст позиции, id"},
        {"name": "since", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "принят не раньше (ГГГГ-ММ-ДД или дата и время ISO 8601)"},
        {"name": "until", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "принят раньше (дата ГГГГ-ММ-ДД включает весь день)"},
        {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}, "description": "строк"},
        {"name": "offset", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0},
         "description": "пропустить строк (страницы)"},
    ],
    "listGoods": [
        {"name": name, "in": "query", "required": False, "description": text, "schema": {"type": kind}}
        for name, kind, text in (
            ("store", "string", "магазин (store кассы в DEVICES); можно не указывать, если магазин один"),
            ("q", "string", "часть наименования или артикула, без учёта регистра"),
            ("barcode", "string", "штрихкод (основной или дополнительный)"),
            ("code", "string", "код товара"),
            ("limit", "integer", "сколько строк вернуть (1–1000, по умолчанию 100)"),
            ("offset", "integer", "сколько строк пропустить"),
        )
    ],
}

#: Extra request examples (validated by the tests like the main ones).
EXTRA_EXAMPLES: dict[str, dict[str, dict]] = {
    "settleJob": {"not_fiscalised": {"fiscalised": False}},
    "createReceipt": {
        "return": {"id": "return-77", "type": "sell_return",
                   "items": [{"name": "Кофе", "price": 350, "quantity": "0.5", "amount": 175, "tax": 10}],
                   "payments": [{"type": "cash", "amount": 175}]},
        "correction": {"type": "sell_correction", "id": "corr-5",
                       "items": [{"name": "Выручка без чека", "price": 1200, "tax": "vat20"}],
                       "payments": [{"type": "cash", "amount": 1200}],
                       "correction": {"type": "self", "date": "2025-12-30"}},
        "electronic": {"id": "web-9001", "electronic_only": True, "customer_contact": "+79991234567",
                       "taxation": "usnIncome",
                       "items": [{"name": "Подписка на месяц", "price": 299, "tax": "none",
                                  "payment_object": "service", "payment_method": "fullPrepayment"}],
                       "payments": [{"type": "electronic", "amount": 299}]},
    },
}

_ERROR_TEXT = {
    "401": "Нужна авторизация (HTTP Basic) или неверный логин/пароль",
    "403": "Недостаточно прав или операция отключена в настройках",
    "404": "Касса или задание не найдены",
    "409": "Ключ идемпотентности уже использован для другого документа",
    "413": "Тело запроса больше MAX_CONTENT_LENGTH (2 МБ)",
    "422": "Ошибка в данных запроса: поле и значение названы в error",
    "429": "Слишком много неудачных входов: повторите через Retry-After секунд",
    "502": "ККТ выполнила команду с ошибкой",
    "503": "Нет связи с ККТ, исход чека выясняется или очередь кассы переполнена (повторите через Retry-After)",
    "504": "ККТ не ответила за отведённое время",
}


def openapi_path(rule: str) -> str:
    """Flask rule → OpenAPI path: ``/devices/<int:device>`` → ``/devices/{device}``."""
    out = []
    for part in rule.split("/"):
        if part.startswith("<") and part.endswith(">"):
            part = "{" + part[1:-1].split(":")[-1] + "}"
        out.append(part)
    return "/".join(out)


def component_name(schema: type[Schema] | Schema) -> str:
    """``ReceiptSchema`` → ``Receipt``."""
    cls = schema if isinstance(schema, type) else type(schema)
    name = cls.__name__
    return name[: -len("Schema")] if name.endswith("Schema") and name != "Schema" else name


def _ref(schema: type[Schema] | Schema, components: dict) -> dict:
    cls = schema if isinstance(schema, type) else type(schema)
    name = component_name(cls)
    if name not in components:
        components[name] = {}  # placeholder against recursion
        components[name] = schema_object(cls, components)
    return {"$ref": f"#/components/schemas/{name}"}


def _apply_validators(out: dict, field: fields.Field) -> None:
    for v in field.validators:
        if isinstance(v, validate.Length):
            lo, hi = ("minItems", "maxItems") if out.get("type") == "array" else ("minLength", "maxLength")
            if v.min is not None:
                out[lo] = v.min
            if v.max is not None:
                out[hi] = v.max
        elif isinstance(v, validate.Range):
            if v.min is not None:
                out["minimum"] = v.min
            if v.max is not None:
                out["maximum"] = v.max
        elif isinstance(v, validate.OneOf):
            out["enum"] = list(v.choices)
        elif isinstance(v, validate.Regexp):
            out["pattern"] = v.regex.pattern


def field_object(field: fields.Field, components: dict) -> dict:
    """JSON Schema (OpenAPI 3.0 dialect) of one marshmallow field."""
    money_text = "рубли: число или строка, не больше двух знаков после точки"
    if isinstance(field, kfields.Nested) or isinstance(field, fields.Nested):
        out: dict[str, Any] = _ref(field.nested, components)  # type: ignore[arg-type]
    elif isinstance(field, fields.List):
        out = {"type": "array", "items": field_object(field.inner, components)}
    elif isinstance(field, s.TextLineField):
        out = {"oneOf": [{"type": "string", "maxLength": s.MAX_TEXT}, _ref(s.TextLineSchema, components)]}
    elif isinstance(field, kfields.Money):
        out = {"oneOf": [{"type": "number"}, {"type": "string", "pattern": r"^-?\d+([.,]\d{1,2})?$"}],
               "description": money_text}
    elif isinstance(field, kfields.Quantity):
        out = {"oneOf": [{"type": "number", "exclusiveMinimum": True, "minimum": 0},
                         {"type": "string", "pattern": r"^\d+([.,]\d{1,3})?$"}],
               "description": "количество: до трёх знаков после точки"}
    elif isinstance(field, kfields.Vat):
        out = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    elif isinstance(field, s.NamedCode):
        out = {"oneOf": [{"type": "string", "enum": list(field.names)},
                         {"type": "integer", "enum": sorted(field.codes)}]}
    elif isinstance(field, fields.Boolean):
        out = {"type": "boolean"}
    elif isinstance(field, fields.Integer):
        out = {"type": "integer"}
    elif isinstance(field, fields.Date):
        out = {"type": "string", "format": "date"}
    elif isinstance(field, fields.String):
        out = {"type": "string"}
    else:
        out = {}
    _apply_validators(out, field)
    meta = field.metadata
    if meta.get("description"):
        out["description"] = f"{meta['description']}" + (f" ({out['description']})" if "description" in out and
                                                         out["description"] != meta["description"] else "")
    if meta.get("enum") and "enum" not in out and "oneOf" not in out:
        out["enum"] = list(meta["enum"])
    if field.allow_none and not field.required:
        if "$ref" in out:
            # OpenAPI 3.0 ignores siblings of $ref; a nullable reference needs allOf.
            out = {"allOf": [{"$ref": out.pop("$ref")}], **out}
        out["nullable"] = True
    default = field.load_default
    if not callable(default) and default is not missing and isinstance(default, bool | int | str):
        if not isinstance(field, kfields.Money) or default == 0:
            out["default"] = default
    return out


def schema_object(schema: type[Schema], components: dict) -> dict:
    """JSON Schema object of a marshmallow schema (properties in declaration order)."""
    inst = schema()
    props = {}
    required = []
    for name, field in inst.fields.items():
        key = field.data_key or name
        props[key] = field_object(field, components)
        if field.required:
            required.append(key)
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    if schema.__doc__:
        out["description"] = schema.__doc__.strip().splitlines()[0]
    return out


def _error_responses(components: dict, codes: list[str]) -> dict:
    ref = _ref(s.ErrorResponseSchema, components)
    return {c: {"description": _ERROR_TEXT[c], "content": {"application/json": {"schema": ref}}} for c in codes}


@functools.lru_cache(maxsize=1)
def _build() -> dict:
    components: dict[str, dict] = {}
    paths: dict[str, dict] = {}
    wait_param = {"name": "wait", "in": "query", "required": False,
                  "description": "сколько секунд ждать результата (0–120; по умолчанию API_DEFAULT_WAIT)",
                  "schema": {"type": "number", "minimum": 0, "maximum": 120}}
    key_param = {"name": "Idempotency-Key", "in": "header", "required": False,
                 "description": "ключ идемпотентности (до 128 символов): повтор не выполнит операцию дважды",
                 "schema": {"type": "string", "maxLength": 128}}
    for method, rule, role, op_id, summary, req, example, ok, is_job in OPERATIONS:
        path = openapi_path(rule)
        op: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": [_tag(rule)]}
        params: list[dict] = []
        if "{device}" in path:
            params.append({"name": "device", "in": "path", "required": True, "description": "номер кассы",
                           "schema": {"type": "integer", "minimum": 1}})
        if "{job_id}" in path:
            params.append({"name": "job_id", "in": "path", "required": True, "description": "id задания",
                           "schema": {"type": "string"}})
        if is_job or op_id == "deviceStatus":
            params.append(wait_param)
        if method == "post":
            params.append(key_param)
        params.extend(QUERY_PARAMS.get(op_id, ()))
        if params:
            op["parameters"] = params
        if req is not None:
            media: dict[str, Any] = {"schema": _ref(req, components)}
            examples = {"main": {"summary": summary, "value": example}} if example is not None else {}
            examples.update({k: {"value": v} for k, v in EXTRA_EXAMPLES.get(op_id, {}).items()})
            if examples:
                media["examples"] = examples
            op["requestBody"] = {"required": True, "content": {"application/json": media}}
        responses: dict[str, Any] = {}
        if ok is None:
            responses["200"] = {"description": "описание API", "content": {"application/json": {"schema": {
                "type": "object"}}}}
        else:
            responses["200"] = {"description": "готово" if is_job else "ответ",
                                "content": {"application/json": {"schema": _ref(ok, components)}}}
        if is_job:
            responses["202"] = {"description": "принято, ещё выполняется: результат по ссылке из Location",
                                "headers": {"Location": {"schema": {"type": "string"}}},
                                "content": {"application/json": {"schema": _ref(s.JobSchema, components)}}}
        if role is not None:
            codes = ["401", "403", "429"]
            if "{device}" in path or "{job_id}" in path or op_id == "createReceipt":
                codes.append("404")
            if op_id == "listGoods":
                codes.append("404")
            if req is not None or is_job or op_id == "deviceStatus" or op_id in QUERY_PARAMS:
                codes.append("422")
            if req is not None:
                codes.append("413")
            if is_job or op_id in ("cancelQueuedReceipt", "settleJob"):
                codes.append("409")
            if op_id == "deviceStatus":
                codes += ["502", "503", "504"]
            responses.update(_error_responses(components, codes))
            if is_job:
                # The job ran and failed: the answer is the job itself, whose "error" has the
                # same {code, message} shape as every other refusal.
                for code in ("502", "503"):
                    responses[code] = {"description": _ERROR_TEXT[code] + " (задание с полем error)",
                                       "content": {"application/json": {"schema": _ref(s.JobSchema, components)}}}
            op["security"] = [{"basicAuth": []}]
            who = "администратор (admin)" if role == "admin" else "кассир (cashier) или администратор"
            op["description"] = f"Роль: {who}."
        else:
            op["security"] = []
        op["responses"] = responses
        paths.setdefault(PREFIX + path, {})[method] = op
    paths.update(kkmserver_paths(components))
    return {
        "openapi": "3.0.3",
        "info": {"title": "kkt — сервис фискализации ККТ АТОЛ", "version": kktapp.__version__,
                 "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "tags": [{"name": "Кассы"}, {"name": "Смена"}, {"name": "Деньги"}, {"name": "Печать"},
                 {"name": "Чеки"}, {"name": "Задания"}, {"name": "Товары"},
                 {"name": "Описание"}, {"name": KKMSERVER_TAG}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {"basicAuth": {"type": "http", "scheme": "basic"}},
        },
        "security": [{"basicAuth": []}],
    }


KKMSERVER_TAG = "KKM Server"


def kkmserver_paths(components: dict) -> dict:
    """POST /Execute and /Execute/sync: KKM Server's one-endpoint protocol (kktapp.web.kkmserver)."""
    from kktapp.web import kkmserver_check as kc
    from kktapp.web.kkmserver_commands import COMMANDS

    names = [*COMMANDS, "GetRezult"]
    answer = {"type": "object", "required": ["Command", "Status", "Error", "Warning", "Message", "IdCommand"],
              "properties": {
                  "Command": {"type": "string"},
                  "Status": {"type": "integer", "enum": [0, 1, 2, 3, 4],
                             "description": "0 выполнена, 1 выполняется, 2 ошибка, 3 команда или ККТ не найдена, "
                                            "4 в очереди"},
                  "Error": {"type": "string", "description": "текст ошибки для кассира"},
                  "ErrorCode": {"type": "integer", "description": "код ошибки: 1..255 — ККТ, 1001+ — сервис"},
                  "Warning": {"type": "string"}, "Message": {"type": "string"},
                  "IdCommand": {"type": "string"}, "NumDevice": {"type": "integer"}, "UnitName": {"type": "string"},
                  "Rezult": {"type": "object", "description": "GetRezult: ответ команды с этим IdCommand"}},
              "additionalProperties": True,
              "description": "поля команды (CheckNumber, SessionNumber, URL, QRCode, Info, ListUnit, LineLength…)"}
    body = {"type": "object", "required": ["Command"], "additionalProperties": True, "properties": {
        "Command": {"type": "string", "enum": names},
        "NumDevice": {"type": "integer", "minimum": 0, "description": "номер ККТ; 0 — первая доступная и свободная"},
        "KktNumber": {"type": "string", "description": "заводской номер ККТ"},
        "InnKkm": {"type": "string", "description": "ИНН организации ККТ"},
        "IdCommand": {"type": "string", "maxLength": 128,
                      "description": "ключ идемпотентности и GetRezult; повтор не выполнит команду дважды"},
        "Timeout": {"type": "integer", "minimum": 0, "description": "секунд ждать: 0 — 60, 1 — ответить сразу"}}}
    paths = {}
    for path in ("/Execute", "/Execute/sync"):
        op_id = "kkmserverExecute" if path == "/Execute" else "kkmserverExecuteSync"
        paths[path] = {"post": {
            "operationId": op_id, "tags": [KKMSERVER_TAG], "security": [{"basicAuth": []}],
            "summary": "Команда KKM Server: " + ", ".join(names),
            "description": "Роль: кассир (cashier); XReport, ZReport, CloseShift и OfdReport — администратор (admin). "
                           "Ответ всегда HTTP 200: результат и отказы (в том числе доступа) — в Status и Error. "
                           "Поля RegisterCheck — схема RegisterCheck.",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"oneOf": [_ref(kc.RegisterCheckSchema, components), body]}}}},
            "responses": {"200": {"description": "ответ команды", "content": {"application/json": {
                "schema": answer}}}},
        }}
    return paths


def _tag(rule: str) -> str:
    if "/shift/" in rule:
        return "Смена"
    if "cash-" in rule:
        return "Деньги"
    if "print" in rule:
        return "Печать"
    if rule.startswith("/receipts"):
        return "Чеки"
    if rule.startswith("/jobs"):
        return "Задания"
    if rule.startswith("/openapi"):
        return "Описание"
    if rule.startswith("/goods"):
        return "Товары"
    return "Кассы"


def spec() -> dict:
    """The OpenAPI document (built once per process)."""
    return _build()


def request_examples() -> list[tuple[str, type[Schema], dict]]:
    """(operationId, schema, example) for every documented request example (for the tests)."""
    out = []
    for _method, _rule, _role, op_id, _summary, req, example, _ok, _job in OPERATIONS:
        if req is None:
            continue
        if example is not None:
            out.append((op_id, req, example))
        out.extend((op_id, req, ex) for ex in EXTRA_EXAMPLES.get(op_id, {}).values())
    return out
