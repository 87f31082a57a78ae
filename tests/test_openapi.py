"""The OpenAPI description stays true: routes, request examples, real answers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from marshmallow import ValidationError

from kktapp.web import fields as kfields
from kktapp.web import openapi
from kktapp.web.schemas import ReceiptSchema, build_receipt, receipt_date

API = "/api/v1"
IGNORED_METHODS = {"HEAD", "OPTIONS"}


def resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema


def conforms(value: Any, schema: dict, spec: dict, where: str = "$") -> list[str]:
    """Problems of ``value`` against an OpenAPI 3.0 schema (the subset openapi.py emits).

    Objects are strict: every key must be documented and every required key present.
    """
    schema = resolve(spec, schema)
    if value is None:
        return [] if schema.get("nullable") or not schema else [f"{where}: null not allowed"]
    if "allOf" in schema:
        return [p for part in schema["allOf"] for p in conforms(value, part, spec, where)]
    if "oneOf" in schema:
        if any(not conforms(value, s, spec, where) for s in schema["oneOf"]):
            return []
        return [f"{where}: matches no alternative"]
    kind = schema.get("type")
    problems: list[str] = []
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{where}: expected object"]
        props = schema.get("properties")
        if props is None:
            return []
        for key in schema.get("required", []):
            if key not in value:
                problems.append(f"{where}.{key}: required but missing")
        for key, item in value.items():
            if key not in props:
                problems.append(f"{where}.{key}: not documented")
            else:
                problems += conforms(item, props[key], spec, f"{where}.{key}")
    elif kind == "array":
        if not isinstance(value, list):
            return [f"{where}: expected array"]
        for i, item in enumerate(value):
            problems += conforms(item, schema["items"], spec, f"{where}[{i}]")
    elif kind == "string":
        if not isinstance(value, str):
            problems.append(f"{where}: expected string, got {value!r}")
        elif "enum" in schema and value not in schema["enum"]:
            problems.append(f"{where}: {value!r} not in enum")
    elif kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{where}: expected integer, got {value!r}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            problems.append(f"{where}: expected boolean")
    elif kind == "number":
        if not isinstance(value, int | float) or isinstance(value, bool):
            problems.append(f"{where}: expected number")
    return problems


def operation(spec: dict, method: str, path: str) -> dict:
    return spec["paths"][API + path][method]


def check_response(spec: dict, method: str, path: str, res) -> None:
    op = operation(spec, method, path)
    documented = op["responses"].get(str(res.status_int))
    assert documented, f"{method.upper()} {path}: status {res.status_int} not documented"
    schema = documented["content"]["application/json"]["schema"]
    problems = conforms(res.json, schema, spec)
    assert not problems, problems


@pytest.fixture
def spec() -> dict:
    return openapi.spec()


# --------------------------------------------------------------------------- structure


def test_every_api_route_is_documented_and_every_path_is_a_route(app, spec):
    routes = {
        (method.lower(), openapi.openapi_path(rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith(("api.", "kkmserver."))
        for method in rule.methods - IGNORED_METHODS
    }
    documented = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert routes == documented


def test_every_reference_resolves_and_every_component_is_used(spec):
    text = json.dumps(spec)
    refs = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"].rsplit("/", 1)[-1])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec)
    assert refs <= set(spec["components"]["schemas"])
    assert set(spec["components"]["schemas"]) <= refs
    assert "float" not in text


def test_operation_ids_unique_and_roles_stated(spec):
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for ops in spec["paths"].values():
        for op in ops.values():
            if op["security"]:
                assert op["description"].startswith("Роль:")
                # KKM Server's protocol answers refusals with HTTP 200 and Status 2 (kkmserver.py).
                if openapi.KKMSERVER_TAG not in op["tags"]:
                    assert {"401", "403", "429"} <= set(op["responses"])


def test_served_spec_is_the_built_one(testapp, spec):
    assert testapp.get(f"{API}/openapi.json").json == json.loads(json.dumps(spec, ensure_ascii=False))


# --------------------------------------------------------------------------- examples


@pytest.mark.parametrize("op_id, schema, example", openapi.request_examples(),
                         ids=[f"{o}-{i}" for i, (o, _s, _e) in enumerate(openapi.request_examples())])
def test_request_examples_validate_against_the_schemas(op_id, schema, example):
    ctx = {"on_date": receipt_date(example), "accept_legacy": True}
    with kfields.FiscalContext(ctx):  # type: ignore[arg-type]
        try:
            loaded = schema().load(example)
        except ValidationError as exc:  # pragma: no cover - the message is the point
            pytest.fail(f"{op_id}: {exc.messages}")
    if schema is ReceiptSchema:
        build_receipt(loaded, {})


def test_request_examples_are_in_the_spec(spec):
    in_spec = []
    for ops in spec["paths"].values():
        for op in ops.values():
            media = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            in_spec += [(op["operationId"], ex["value"]) for ex in media.get("examples", {}).values()]
    assert sorted(json.dumps(x, sort_keys=True) for x in in_spec) == sorted(
        json.dumps((o, e), sort_keys=True) for o, _s, e in openapi.request_examples())


def test_request_examples_conform_to_the_documented_request_schema(spec):
    for ops in spec["paths"].values():
        for op in ops.values():
            media = op.get("requestBody", {}).get("content", {}).get("application/json")
            if not media:
                continue
            for ex in media.get("examples", {}).values():
                problems = conforms(ex["value"], media["schema"], spec)
                assert not problems, (op["operationId"], problems)


# --------------------------------------------------------------------------- real answers


def test_real_answers_match_the_documented_fields(clients, spec):
    admin, cashier = clients.admin, clients.cashier
    check_response(spec, "get", "/devices", cashier.get(f"{API}/devices"))
    check_response(spec, "post", "/devices/{device}/shift/open", cashier.post(f"{API}/devices/1/shift/open"))
    check_response(spec, "get", "/devices/{device}/status", cashier.get(f"{API}/devices/1/status"))
    check_response(spec, "get", "/devices/{device}/snapshot", cashier.get(f"{API}/devices/1/snapshot"))
    check_response(spec, "post", "/devices/{device}/cash-in",
                   cashier.post_json(f"{API}/devices/1/cash-in", {"amount": 1000}))
    check_response(spec, "post", "/devices/{device}/cash-out",
                   cashier.post_json(f"{API}/devices/1/cash-out", {"amount": 5000}, status=502))
    check_response(spec, "post", "/devices/{device}/print",
                   cashier.post_json(f"{API}/devices/2/print", {"lines": ["x"]}))
    example = openapi.request_examples()
    for op_id, _schema, body in example:
        if op_id != "createReceipt":
            continue
        res = cashier.post_json(f"{API}/receipts", body)
        check_response(spec, "post", "/receipts", res)
        assert res.json["state"] == "done"
        check_response(spec, "get", "/receipts/{job_id}", cashier.get(res.headers["Location"]))
        check_response(spec, "get", "/jobs/{job_id}", cashier.get(f"{API}/jobs/{res.json['id']}"))
    check_response(spec, "post", "/devices/{device}/reprint-last", cashier.post(f"{API}/devices/1/reprint-last"))
    check_response(spec, "post", "/devices/{device}/shift/x-report", admin.post(f"{API}/devices/1/shift/x-report"))
    check_response(spec, "post", "/devices/{device}/shift/close", admin.post(f"{API}/devices/1/shift/close"))
    check_response(spec, "post", "/devices/{device}/cancel-receipt", admin.post(f"{API}/devices/1/cancel-receipt"))
    # Errors: documented statuses with the documented error object.
    check_response(spec, "post", "/receipts", cashier.post_json(f"{API}/receipts", {"items": []}, status=422))
    check_response(spec, "post", "/receipts", clients.anon.post_json(f"{API}/receipts", {}, status=401))
    check_response(spec, "post", "/devices/{device}/shift/close",
                   cashier.post(f"{API}/devices/1/shift/close", status=403))
    check_response(spec, "post", "/devices/{device}/reset-summary",
                   admin.post(f"{API}/devices/1/reset-summary", status=403))
    check_response(spec, "get", "/devices/{device}/status", cashier.get(f"{API}/devices/7/status", status=404))
    check_response(spec, "get", "/jobs/{job_id}", cashier.get(f"{API}/jobs/nope", status=404))
    check_response(spec, "post", "/devices/{device}/tech-reset",
                   admin.post(f"{API}/devices/1/tech-reset", status=403))
    body = {"items": [{"name": "x", "price": 1, "tax": "vat22"}], "payments": [{"type": "cash", "amount": 1}]}
    cashier.post_json(f"{API}/receipts", body, headers={"Idempotency-Key": "k1"})
    body["payments"][0]["amount"] = 2
    check_response(spec, "post", "/receipts",
                   cashier.post_json(f"{API}/receipts", body, headers={"Idempotency-Key": "k1"}, status=409))
    res = cashier.post_json(f"{API}/receipts?wait=0", openapi.request_examples()[-1][2] | {"id": "async"},
                            status="*")
    check_response(spec, "post", "/receipts", res)
