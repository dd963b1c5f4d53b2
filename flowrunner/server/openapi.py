"""The OpenAPI 3.1 document of ``serve`` (``GET /openapi.json``, ``flowrunner schema
openapi``). The request body schema is the file in ``schemas/``, its ``$defs`` inlined
(a ``$ref`` inside an OpenAPI document resolves against the whole document)."""

from __future__ import annotations

from typing import Any

from flowrunner import __version__
from flowrunner.server.body import request_schema

FLOW_NAME = "^[a-z0-9][a-z0-9_-]*$"
JSON = "application/json"


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with every ``#/$defs/NAME`` reference replaced by its definition."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {
            k: _inline(v, defs) for k, v in node.items() if k not in ("$defs", "$schema", "$id")
        }
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _problem_response(text: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": text,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
    if headers:
        out["headers"] = headers
    return out


_UNAUTHORIZED = _problem_response(
    "Missing or invalid bearer token.",
    {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer."}},
)
_RETRY = {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds to wait."}}
_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "required": ["type", "title", "status"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["pointer", "detail"],
                    "properties": {"pointer": {"type": "string"}, "detail": {"type": "string"}},
                },
            },
        },
    },
    "Accepted": {
        "type": "object",
        "required": ["request-id", "executions"],
        "properties": {
            "request-id": {"type": "string"},
            "executions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["execution_id"],
                    "properties": {
                        "client-identifier": {"type": "string"},
                        "execution_id": {"type": "string"},
                    },
                },
            },
        },
    },
    "Execution": {
        "type": "object",
        "required": ["execution_id", "flow", "status"],
        "properties": {
            "execution_id": {"type": "string"},
            "flow": {"type": "string"},
            "status": {"enum": ["QUEUED", "RUNNING", "COMPLETED", "FAILED"]},
        },
        "description": "The execution record (as flowrunner run --json prints it) once it "
        "ended; while it waits or runs, its id, flow, status and request_id.",
    },
    "Request": {
        "type": "object",
        "required": ["request-id", "flow", "executions"],
        "properties": {
            "request-id": {"type": "string"},
            "flow": {"type": "string"},
            "created_at": {"type": "string"},
            "executions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["execution_id", "status"],
                    "properties": {
                        "client-identifier": {"type": "string"},
                        "execution_id": {"type": "string"},
                        "status": {"type": "string"},
                    },
                },
            },
        },
    },
}


def _json(ref: str, text: str) -> dict[str, Any]:
    return {
        "description": text,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def _post(flow_schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "operationId": "createExecutions",
        "summary": "Queue one execution of the flow per call.",
        "parameters": [
            {"name": "flow", "in": "path", "required": True, "schema": flow_schema},
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
            },
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ExecutionsRequest"}}
            },
        },
        "responses": {
            "202": {
                **_json("Accepted", "Recorded; the executions will run."),
                "links": {
                    "GetRequest": {
                        "operationId": "getRequest",
                        "parameters": {"id": "$response.body#/request-id"},
                    },
                    "GetFirstExecution": {
                        "operationId": "getExecution",
                        "parameters": {"id": "$response.body#/executions/0/execution_id"},
                    },
                },
            },
            "400": _problem_response("The body is not JSON, or a header is invalid."),
            "401": _UNAUTHORIZED,
            "404": _problem_response("No such flow."),
            "409": _problem_response("The same Idempotency-Key is being recorded.", _RETRY),
            "413": _problem_response("The body is over 256 KiB."),
            "415": _problem_response("The body is not JSON."),
            "422": _problem_response("The body breaks the schema, or the key was reused."),
            "429": _problem_response("Too many executions are waiting.", _RETRY),
            "503": _problem_response("The server is stopping, or its store is unavailable."),
        },
    }


def _get(operation: str, summary: str, ref: str) -> dict[str, Any]:
    return {
        "operationId": operation,
        "summary": summary,
        "parameters": [
            {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {
            "200": _json(ref, summary),
            "401": _UNAUTHORIZED,
            "404": _problem_response("Unknown id."),
            "503": _problem_response("The state store is unavailable."),
        },
    }


def _plain(operation: str, text: str, media: str) -> dict[str, Any]:
    return {
        "operationId": operation,
        "summary": text,
        "security": [],
        "responses": {
            "200": {"description": text, "content": {media: {"schema": {}}}},
            "503": _problem_response("Not ready, or stopping."),
        },
    }


def document(flows: list[str] | None = None) -> dict[str, Any]:
    """The OpenAPI document; with ``flows``, the flow path parameter lists them."""
    schema = request_schema()
    flow_schema: dict[str, Any] = {"type": "string", "pattern": FLOW_NAME}
    if flows is not None:
        flow_schema = {"type": "string", "enum": flows} if flows else flow_schema
    return {
        "openapi": "3.1.0",
        "info": {"title": "flowrunner trigger API", "version": __version__},
        "security": [{"bearer": []}],
        "paths": {
            "/v1/flows/{flow}/executions": {"post": _post(flow_schema)},
            "/v1/executions/{id}": {
                "get": _get("getExecution", "The execution record or its queue state.", "Execution")
            },
            "/v1/requests/{id}": {
                "get": _get("getRequest", "The executions of a request.", "Request")
            },
            "/healthz": {"get": _plain("healthz", "Alive.", JSON)},
            "/readyz": {
                "get": _plain("readyz", "Flows loaded and store reachable.", "application/json")
            },
            "/metrics": {"get": _plain("metrics", "Prometheus metrics.", "text/plain")},
            "/openapi.json": {"get": _plain("openapi", "This document.", JSON)},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "ExecutionsRequest": _inline(schema, schema.get("$defs", {})),
                **_SCHEMAS,
            },
        },
    }
