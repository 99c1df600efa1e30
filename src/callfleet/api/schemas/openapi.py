"""The finishing touches FastAPI's generated `/openapi.json` needs to tell the truth.

- The request models named by `json_body` go into `components/schemas`.
- The API key is a security scheme (header `authorization`, raw or `Bearer`), not an
  optional header parameter of each operation.
- FastAPI's automatic 422 `HTTPValidationError` is dropped: a request that fails
  validation is answered 400 in the error envelope (see `api/errors.py`), which each
  route documents; a 422 that remains is the Idempotency-Key mismatch.
"""

from __future__ import annotations

from typing import Any

from callfleet.api.schemas.common import request_components

__all__ = ["SECURITY_SCHEME", "finish_openapi"]

SECURITY_SCHEME = "ApiKey"
_AUTO_422 = "#/components/schemas/HTTPValidationError"


def _is_auto_422(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref") == _AUTO_422)


def _finish_operation(operation: dict[str, Any]) -> None:
    params = operation.get("parameters", [])
    keyed = [p for p in params if p.get("in") == "header" and p.get("name") == "authorization"]
    if keyed:
        operation["parameters"] = [p for p in params if p not in keyed]
        if not operation["parameters"]:
            del operation["parameters"]
        operation["security"] = [{SECURITY_SCHEME: []}]
    responses = operation.get("responses", {})
    if "422" in responses and _is_auto_422(responses["422"]):
        del responses["422"]


def finish_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Apply the finishing touches to FastAPI's generated schema (in place; returned)."""
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            _finish_operation(operation)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(request_components())
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "apiKey",
            "in": "header",
            "name": "authorization",
            "description": "The API key, raw or as `Bearer <key>` (create one with "
            "`callfleet keys create --name NAME`).",
        }
    }
    return schema
