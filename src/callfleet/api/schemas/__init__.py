"""The OpenAPI description of the HTTP API: one module per resource, plus the glue.

The routes read their bodies by hand (leniently: unknown fields are warned about,
legacy aliases accepted, errors worded for people), so the request models here are
documentation, not parsers: a route names its body with `json_body(Model)` and
`request_components()` puts every such model into `components/schemas`. Responses
are documented with `documented(Model, 400, 404, ...)`, which describes without
filtering: the JSON a route returns stays exactly what the route builds.
"""

from __future__ import annotations

from callfleet.api.schemas.common import documented, json_body, request_components
from callfleet.api.schemas.openapi import finish_openapi

__all__ = ["documented", "finish_openapi", "json_body", "request_components"]
