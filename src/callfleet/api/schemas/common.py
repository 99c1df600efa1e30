"""Shared pieces of the API description: the envelopes, the error responses, the glue.

`json_body(Model)` is a route's `openapi_extra`: its request body refers to the
model's schema, registered by `request_components()` (called by the app's openapi
customisation). `documented(Model, *codes)` is a route's `responses`: the 200 body
and the error envelope for each error status the route can answer with.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

__all__ = [
    "ERROR_TEXT",
    "ErrorResponse",
    "FieldErrorItem",
    "Success",
    "documented",
    "json_body",
    "request_components",
]

REF_PREFIX = "#/components/schemas/"


class FieldErrorItem(BaseModel):
    """One offending field of a request."""

    field: str = Field(
        description="Where the problem is, as a path into the request.",
        examples=["call_data[3].phone_number"],
    )
    message: str = Field(description="What is wrong there, and how to fix it.")


class ErrorResponse(BaseModel):
    """The error envelope of every 4xx (and of a 500, which has no `errors`)."""

    status: Literal["error"] = "error"
    message: str = Field(
        description="One sentence a person can act on.",
        examples=["The request has invalid fields: limit. See `errors` for each one."],
    )
    errors: list[FieldErrorItem] = Field(
        default_factory=list, description="Each offending field; may be empty."
    )


class Success(BaseModel):
    """The success envelope with a message only."""

    status: Literal["success"] = "success"
    message: str = Field(description="What was done, in words.")


ERROR_TEXT: dict[int, str] = {
    400: "The request is invalid: the message and `errors` say what to fix.",
    401: "The `authorization` header is missing, or its API key is unknown or revoked.",
    404: "No such resource in this account.",
    409: "A conflict: the resource exists already, is still in use, or a request with "
    "the same Idempotency-Key is still being processed.",
    410: "The resource existed and is gone (deleted, expired or erased); the message says when.",
    413: "The batch has more rows than the server accepts in one request.",
    416: "The `Range` starts past the end; `Content-Range` gives the size.",
    422: "This Idempotency-Key was already used with a different request.",
    502: "The LLM that answers the questions failed.",
    429: "This API key is over its rate limit; retry after `Retry-After` seconds.",
    503: "A part the request needs (the storage) is not available yet; retry.",
}

_REQUEST_MODELS: list[type[BaseModel]] = []


IDEMPOTENCY_KEY: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "The same key with the same body returns the first response and "
    "creates nothing new; with a different body it is a 422; while the first request "
    "is still running, a 409.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


def json_body(model: type[BaseModel], *, idempotent: bool = False) -> dict[str, Any]:
    """`openapi_extra` naming `model` as the (required) JSON request body, and with
    `idempotent` the `Idempotency-Key` header."""
    if model not in _REQUEST_MODELS:
        _REQUEST_MODELS.append(model)
    schema = {"$ref": f"{REF_PREFIX}{model.__name__}"}
    out: dict[str, Any] = {
        "requestBody": {"content": {"application/json": {"schema": schema}}, "required": True}
    }
    if idempotent:
        out["parameters"] = [IDEMPOTENCY_KEY]
    return out


def request_components() -> dict[str, Any]:
    """The JSON schemas of every model named by `json_body`, for `components/schemas`."""
    _, top = models_json_schema(
        [(m, "validation") for m in _REQUEST_MODELS], ref_template=REF_PREFIX + "{model}"
    )
    defs: dict[str, Any] = top.get("$defs", {})
    return defs


def documented(model: type[BaseModel] | None, *errors: int) -> dict[int | str, Any]:
    """`responses` for a route: its 200 body (when JSON) and the error envelope per code."""
    out: dict[int | str, Any] = {}
    if model is not None:
        out[200] = {"model": model, "description": "Success."}
    # Every route that takes a key is rate limited per key (api/ratelimit.py).
    for code in (*errors, 429) if 401 in errors else errors:
        out[code] = {"model": ErrorResponse, "description": ERROR_TEXT[code]}
    return out
