"""`/openapi.json` describes every operation: what to send and what comes back.

Without this a route added with an untyped body or response would silently leave
`/docs`, generated clients and the fuzzer (test_openapi_fuzz.py) blind to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from callfleet.config import Settings
from callfleet.wiring import create_app

REF = "#/components/schemas/"


@pytest.fixture
def spec(tmp_path: Path) -> dict[str, Any]:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'c.db'}")
    client = TestClient(create_app(settings, dispatch=False))  # no lifespan: no database
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    body: dict[str, Any] = resp.json()
    return body


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
    ]


def component(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    assert ref.startswith(REF), f"not a named schema: {schema}"
    found: dict[str, Any] = spec["components"]["schemas"][ref.removeprefix(REF)]
    return found


def test_every_body_taking_operation_documents_its_json_body(spec: dict[str, Any]) -> None:
    writes = [(m, p, op) for m, p, op in operations(spec) if m in ("POST", "PUT", "PATCH")]
    assert len(writes) >= 8
    for method, path, op in writes:
        if path.endswith(("/stop", "/pause", "/resume")):
            assert "requestBody" not in op, f"{method} {path} takes no body"
            continue
        body = op.get("requestBody")
        assert body is not None and body["required"], f"{method} {path} has no request body"
        model = component(spec, body["content"]["application/json"]["schema"])
        assert model["properties"], f"{method} {path}: empty body schema"
        assert all(
            "description" in p or "$ref" in p or "title" in p for p in model["properties"].values()
        )


def test_every_operation_has_a_typed_success_response(spec: dict[str, Any]) -> None:
    for method, path, op in operations(spec):
        ok = {code: r for code, r in op["responses"].items() if code.startswith("2")}
        assert ok, f"{method} {path} documents no 2xx response"
        for code, response in ok.items():
            content = response.get("content")
            assert content, f"{method} {path} {code}: no content"
            for media_type, entry in content.items():
                schema = entry.get("schema", {})
                if media_type == "application/json":
                    assert component(spec, schema)["properties"], f"{method} {path}: untyped"
                else:
                    assert schema.get("type") == "string", f"{method} {path} {media_type}"


def test_errors_are_the_envelope_and_the_key_is_a_security_scheme(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas  # our validation errors are 400s
    assert spec["components"]["securitySchemes"]["ApiKey"]["name"] == "authorization"
    for method, path, op in operations(spec):
        for code, response in op["responses"].items():
            if code.startswith("4"):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": REF + "ErrorResponse"}, f"{method} {path} {code}"
        names = [p["name"] for p in op.get("parameters", [])]
        assert "authorization" not in names
        if path.startswith("/v1/"):
            assert op["security"] == [{"ApiKey": []}], f"{method} {path}"
            assert "401" in op["responses"], f"{method} {path}"
