"""Check a request the GHL client made against the official OpenAPI specs.

The repo carries copies of the specs (``ghl/tests/specs/``) so these checks never
skip; each copy must equal ``../shared/vendor-specs/ghl/`` when that is present.
Checked: the path is an operation of a spec with that method; required query,
path and header parameters are there; the ``Version`` header is in its enum;
query names are known; JSON body field names are properties of the body schema
and its required fields are present (except the ones listed in
``BODY_REQUIRED_EXCEPTIONS``, with the reason).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

SPEC_NAMES = ("calendars", "contacts", "conversations")
SPECS_IN_REPO = Path(__file__).resolve().parent / "specs"
SPECS_SHARED = Path(__file__).resolve().parents[3] / "shared" / "vendor-specs" / "ghl"

# The spec marks these send fields required, but GHL's own send examples and the API notes
# (`{type, contactId, message}`) send SMS without them: `subType` is an untyped object and
# `status` is the *result* of a send (delivered/failed...), not an input.
BODY_REQUIRED_EXCEPTIONS = {("POST", "/conversations/messages"): {"subType", "status"}}


def load_spec(name: str) -> dict:
    spec = json.loads((SPECS_IN_REPO / f"{name}.json").read_text())
    shared = SPECS_SHARED / f"{name}.json"
    if shared.exists():
        assert json.loads(shared.read_text()) == spec, f"ghl/tests/specs/{name}.json is out of date"
    return spec


def load_specs() -> list[dict]:
    return [load_spec(name) for name in SPEC_NAMES]


def _resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema


def operation_for(specs: list[dict], method: str, path: str) -> tuple[dict, dict, str]:
    for spec in specs:
        for template, operations in spec["paths"].items():
            pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
            if re.match(pattern, path) and method.lower() in operations:
                return spec, operations[method.lower()], template
    raise AssertionError(f"{method} {path} is not an operation of the GHL specs")


def check_request(specs: list[dict], request, base: str) -> str:
    """Assert ``request`` (a ``requests.PreparedRequest``-like object) fits the specs; returns the template."""
    parts = urlsplit(request.url)
    base_path = urlsplit(base).path
    path = unquote(parts.path[len(base_path) :] if base_path else parts.path)
    spec, operation, template = operation_for(specs, request.method, path)
    query = parse_qs(parts.query)
    headers = {k.lower(): v for k, v in dict(request.headers).items()}
    params = operation.get("parameters", [])
    for param in params:
        name = param["name"]
        if param["in"] == "query":
            if param.get("required"):
                assert name in query, f"missing required query param {name} for {template}"
            if name in query:
                schema = param.get("schema", {})
                if schema.get("type") == "number":
                    float(query[name][0])
                if schema.get("enum"):
                    assert query[name][0] in schema["enum"], f"{name}={query[name][0]} not in the spec's enum"
        if param["in"] == "header" and param.get("required"):
            assert name.lower() in headers, f"missing required header {name} for {template}"
            allowed = param.get("schema", {}).get("enum")
            if allowed:
                assert headers[name.lower()] in allowed, f"{name}: {headers[name.lower()]} not in {allowed}"
    known = {p["name"] for p in params if p["in"] == "query"}
    for name in query:
        assert name in known, f"query param {name} is not in the spec for {template}"
    body_spec = operation.get("requestBody")
    raw = request.body
    if body_spec:
        assert raw, f"{template} needs a JSON body"
        body = json.loads(raw)
        schema = _resolve(spec, body_spec["content"]["application/json"]["schema"])
        properties = schema.get("properties") or {}
        if properties:
            for name in body:
                assert name in properties, f"body field {name} is not in the spec for {template}"
        skip = BODY_REQUIRED_EXCEPTIONS.get((request.method, template), set())
        for name in schema.get("required", []):
            if name not in skip:
                assert name in body, f"required body field {name} missing for {template}"
        for name, value in body.items():
            enum = (properties.get(name) or {}).get("enum")
            if enum:
                assert value in enum, f"body {name}={value!r} not in the spec's enum"
    else:
        assert not raw, f"{template} takes no body"
    return template
