"""The OpenAPI 3 document served at ``/openapi.json``, built from the settings and model catalogue.

It describes what the routes really do, status codes and media types
included, because it is fuzzed against the running API: a status or content
type missing here is a bug in one or the other.
"""

from __future__ import annotations

from typing import Any

from watercolor import __version__
from watercolor.config import Settings
from watercolor.models import MODELS
from watercolor.params import DEFAULT_QUALITY, OUTPUT_FORMATS

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref("Error")}}}


def _unavailable(description: str) -> dict[str, Any]:
    response = _error(description)
    response["headers"] = {"Retry-After": {"description": "Seconds to wait before trying again",
                                           "schema": {"type": "integer", "minimum": 1}}}
    return response


def _image_errors() -> dict[str, Any]:
    """Statuses an image's own error can have (a single image, or every image of a batch)."""
    return {
        "400": _error("Malformed request, an empty image, or invalid base64"),
        "413": _error("Body or an image over the byte limits"),
        "415": _error("Unsupported Content-Type or image format"),
        "422": _error("Invalid parameter, too many images, a corrupt image, or an image over the "
                      "pixel limits"),
        "500": _error("Internal error (details only in the server's log)"),
        "503": _unavailable("Processing backends unavailable or saturated"),
        "504": _error("The request took longer than WTC_API_DEADLINE"),
    }


def _option_schemas() -> dict[str, dict[str, Any]]:
    """Every model option by name, with the values any model accepts for it."""
    values: dict[str, set] = {}
    for spec in MODELS.values():
        for option in spec.options:
            values.setdefault(option.name, set()).update(option.choices)
    out: dict[str, dict[str, Any]] = {}
    for name, choices in values.items():
        kinds = {type(c) for c in choices}
        kind = {int: "integer", bool: "boolean", float: "number"}.get(kinds.pop(), "string") \
            if len(kinds) == 1 else "string"
        users = ", ".join(m.name for m in MODELS.values() if any(o.name == name for o in m.options))
        out[name] = {"type": kind, "enum": sorted(choices),
                     "description": f"Only for {users}; other models refuse it (422)"}
    return out


def _parameters(settings: Settings) -> list[dict[str, Any]]:
    return [
        {"name": "scale", "in": "query", "required": False,
         "description": "Output scale (default: the model's largest native scale)",
         "schema": {"type": "number", "minimum": 1, "maximum": settings.max_scale}},
        {"name": "model", "in": "query", "required": False,
         "description": f"Model name (default: {settings.default_model}); see GET /v1/models",
         "schema": {"type": "string", "enum": list(MODELS)}},
        {"name": "format", "in": "query", "required": False,
         "description": "Output format; 'same' keeps the input's format",
         "schema": {"type": "string", "enum": [*OUTPUT_FORMATS, "jpg"], "default": "png"}},
        {"name": "quality", "in": "query", "required": False,
         "description": "JPEG/WebP quality",
         "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": DEFAULT_QUALITY}},
        {"name": "tile_size", "in": "query", "required": False,
         "description": "Tile edge in input pixels (default: the model's own)",
         "schema": {"type": "integer", "minimum": 16, "maximum": 4096}},
        *({"name": name, "in": "query", "required": False, "description": schema["description"],
           "schema": {k: v for k, v in schema.items() if k != "description"}}
          for name, schema in _option_schemas().items()),
    ]


def _schemas(settings: Settings) -> dict[str, Any]:
    error_entry = {
        "type": "object",
        "required": ["index", "code", "message"],
        "properties": {"index": {"type": "integer", "minimum": 0}, "code": {"type": "string"},
                       "message": {"type": "string"}},
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "object", "required": ["code", "message"],
                          "properties": {"code": {"type": "string"}, "message": {"type": "string"}}},
                "errors": {"type": "array", "items": error_entry},
            },
        },
        "BatchRequest": {
            "type": "object",
            "required": ["images"],
            "additionalProperties": False,
            "description": "Model options (e.g. denoise) go in `options` or as top-level keys; "
                           "null means the default",
            "properties": {
                "id": {"description": "Any JSON value; echoed back"},
                "images": {"type": "array", "maxItems": settings.max_batch,
                           "items": {"type": "string", "format": "byte",
                                     "description": "Base64 image (a data: URL prefix is fine)"}},
                "scale": {"type": "number", "minimum": 1, "maximum": settings.max_scale,
                          "nullable": True},
                "model": {"type": "string", "enum": [*MODELS, None], "nullable": True},
                "format": {"type": "string", "enum": [*OUTPUT_FORMATS, "jpg", None], "nullable": True},
                "quality": {"type": "integer", "minimum": 1, "maximum": 100, "nullable": True},
                "tile_size": {"type": "integer", "minimum": 16, "maximum": 4096, "nullable": True},
                "options": {"type": "object", "nullable": True,
                            "description": "Model options, e.g. {\"denoise\": 1}",
                            "additionalProperties": False, "properties": _option_schemas()},
                **{name: {**schema, "enum": [*schema["enum"], None], "nullable": True}
                   for name, schema in _option_schemas().items()},
            },
        },
        "BatchResponse": {
            "type": "object",
            "required": ["id", "images"],
            "properties": {
                "id": {"description": "The request's id"},
                "images": {"type": "array",
                           "items": {"type": "string", "nullable": True,
                                     "description": "Base64 result, or null where that image failed"}},
                "errors": {"type": "array", "items": error_entry,
                           "description": "Present only when some images failed"},
            },
        },
        "Models": {
            "type": "object",
            "required": ["default", "models"],
            "properties": {
                "default": {"type": "string"},
                "models": {"type": "array", "items": {
                    "type": "object",
                    "required": ["name", "family", "native_scales", "best_for", "options"],
                    "properties": {
                        "name": {"type": "string"}, "family": {"type": "string"},
                        "native_scales": {"type": "array", "items": {"type": "integer"}},
                        "any_scale": {"type": "boolean"}, "best_for": {"type": "string"},
                        "cpu_speed": {"type": "string"}, "options": {"type": "object"},
                    }}},
            },
        },
        "Job": _job_schema(),
        "Readiness": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"type": "string"},
                "backends": {"type": "array", "description": "Each backend's answer to a ping; with "
                             "WTC_API_KEYS set, only for a request that carries a key", "items": {
                    "type": "object", "required": ["address", "ok"],
                    "properties": {"address": {"type": "string"}, "ok": {"type": "boolean"}}}},
            },
        },
    }


def _job_schema() -> dict[str, Any]:
    def nullable(schema: dict[str, Any]) -> dict[str, Any]:
        return {**schema, "nullable": True}

    problem = {"type": "object", "required": ["code", "message"],
               "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}
    states = ["queued", "running", "done", "failed", "cancelled"]
    image = {
        "type": "object",
        "required": ["index", "name", "state", "progress", "tiles", "error", "result"],
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "name": nullable({"type": "string", "description": "The upload's file name"}),
            "state": {"type": "string", "enum": states},
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "tiles": {"type": "object", "required": ["done", "total"],
                      "description": "The backend's progress: tiles done of total",
                      "properties": {"done": {"type": "integer", "minimum": 0},
                                     "total": {"type": "integer", "minimum": 0}}},
            "error": nullable(problem),
            "result": nullable({
                "type": "object", "required": ["url", "mime", "width", "height", "bytes"],
                "properties": {"url": {"type": "string"}, "mime": {"type": "string"},
                               "width": nullable({"type": "integer"}),
                               "height": nullable({"type": "integer"}),
                               "bytes": {"type": "integer", "minimum": 0}}}),
            "seconds": nullable({"type": "number", "minimum": 0,
                                 "description": "How long a done image took, from its start"}),
        },
    }
    time = nullable({"type": "string", "format": "date-time"})
    return {
        "type": "object",
        "required": ["id", "state", "created", "started", "finished", "expires", "params", "progress",
                     "eta_seconds", "counts", "images", "results_zip", "error"],
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "state": {"type": "string", "enum": states,
                      "description": "done: every image ended and at least one succeeded; "
                                     "failed: none succeeded"},
            "created": {"type": "string", "format": "date-time"},
            "started": time, "finished": time,
            "expires": {**time, "description": "When a finished job and its results are deleted"},
            "params": {"type": "object"},
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "eta_seconds": nullable({"type": "number", "minimum": 0}),
            "counts": {"type": "object", "required": ["images", *states],
                       "properties": {k: {"type": "integer", "minimum": 0} for k in ["images", *states]}},
            "images": {"type": "array", "items": image},
            "results_zip": nullable({"type": "string", "description": "Set once finished with a result"}),
            "error": nullable(problem),
        },
    }


def _job_paths(settings: Settings, protected: Any, image_body: dict[str, Any],
               upload: dict[str, Any]) -> dict[str, Any]:
    job = {JSON: {"schema": _ref("Job")}}
    job_id = {"name": "job_id", "in": "path", "required": True,
              "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}
    index = {"name": "index", "in": "path", "required": True, "description": "Image number, from 0",
             "schema": {"type": "integer", "minimum": 0}}
    no_job = {"404": _error("No such job (finished jobs expire after WTC_JOB_TTL)")}
    store_down = {"503": _unavailable("The job store is in use by another API process or unwritable")}
    submit_errors = {k: v for k, v in _image_errors().items() if k != "504"}
    return {
        "/v1/jobs": {
            "post": protected({
                "summary": "Start a job: upscale one raw image or several multipart images, and watch",
                "operationId": "createJob",
                "description": "Takes what POST /v1/upscale takes and answers at once with the job. "
                               "When every image fails the API's own checks, the first image's error "
                               "status instead, and no job.",
                "parameters": _parameters(settings),
                "requestBody": upload,
                "responses": {
                    "202": {"description": "The job, admitted",
                            "headers": {"Location": {"description": "The job's URL",
                                                     "schema": {"type": "string"}}},
                            "content": job},
                    **submit_errors,
                    "413": _error("Body or an image over the byte limits, or a job larger than the "
                                  "whole store (job_too_large)"),
                    "429": {**_error("The store keeps WTC_MAX_JOBS jobs already (too_many_jobs)"),
                            "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}},
                    "503": _unavailable("The job store is full (store_full) or unavailable"),
                },
            }),
        },
        "/v1/jobs/{job_id}": {
            "get": protected({
                "summary": "A job's state, progress, ETA, errors and result URLs",
                "operationId": "getJob", "parameters": [job_id],
                "responses": {"200": {"description": "The job", "content": job}, **no_job, **store_down},
            }),
            "delete": protected({
                "summary": "Delete a job and its results, stopping it first if it runs",
                "operationId": "deleteJob", "parameters": [job_id],
                "responses": {"204": {"description": "Deleted; the job is gone from now on"},
                              **no_job, **store_down},
            }),
        },
        "/v1/jobs/{job_id}/cancel": {
            "post": protected({
                "summary": "Stop an unfinished job and keep it, with the results of images already done",
                "operationId": "cancelJob", "parameters": [job_id],
                "description": "The backends stop between tiles and queued images never start. A "
                               "finished job is answered as it is.",
                "responses": {"200": {"description": "The job as it now stands", "content": job},
                              **no_job, **store_down},
            }),
        },
        "/v1/jobs/{job_id}/results/{index}": {
            "get": protected({
                "summary": "One image's result", "operationId": "getJobResult",
                "parameters": [job_id, index],
                "responses": {
                    "200": {"description": "The enlarged image",
                            "headers": {"Content-Disposition": {"schema": {"type": "string"}}},
                            "content": {"image/*": {"schema": image_body}}},
                    "404": _error("No such job or image"),
                    "409": _error("Not ready yet (not_ready), or the image failed (image_failed, with "
                                  "its error in `errors`)"),
                    **store_down,
                },
            }),
        },
        "/v1/jobs/{job_id}/results.zip": {
            "get": protected({
                "summary": "Every result of a finished job in one zip (failures as NAME.error.json)",
                "operationId": "getJobZip", "parameters": [job_id],
                "responses": {
                    "200": {"description": "A zip of the results",
                            "content": {"application/zip": {"schema": image_body}}},
                    **no_job,
                    "409": _error("The job has not finished (not_ready) or has no result (no_results)"),
                    **store_down,
                },
            }),
        },
    }


def openapi_document(settings: Settings) -> dict[str, Any]:
    secured = bool(settings.api_keys.strip(" ,"))
    security = [{"bearerAuth": []}, {"apiKeyHeader": []}] if secured else []
    unauthorized = {"401": _error("A valid API key is required")} if secured else {}
    image_body = {"type": "string", "format": "binary"}
    form_fields = {p["name"]: p["schema"] for p in _parameters(settings)}
    upload = {"required": True, "content": {
        "image/*": {"schema": image_body},
        "application/octet-stream": {"schema": image_body},
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["image"], "additionalProperties": False,
            "description": "Parameters may be form fields instead of query parameters (not both)",
            "properties": {"image": {"type": "array", "items": image_body, "minItems": 1,
                                     "maxItems": settings.max_batch},
                           **form_fields}}},
    }}

    def protected(operation: dict[str, Any]) -> dict[str, Any]:
        if secured:
            operation["security"] = security
        operation["responses"].update(unauthorized)
        return operation

    paths: dict[str, Any] = {
        "/": {
            "get": {"summary": "The web page for browsers (Accept preferring text/html); else a "
                               "JSON pointer to the API", "operationId": "index",
                    "responses": {"200": {"description": "The page, or where to go next",
                                          "content": {JSON: {"schema": {"type": "object"}},
                                                      "text/html": {"schema": {"type": "string"}}}}}},
            "post": protected({
                "summary": "Upscale a JSON batch of base64 images (the original client shape)",
                "operationId": "upscaleBatch",
                "description": "Answers one image per input, in input order. A partly failed batch "
                               "answers 200 with null in place of each failed image and an `errors` "
                               "list; when every image failed, the first image's error status.",
                "requestBody": {"required": True,
                                "content": {JSON: {"schema": _ref("BatchRequest")}}},
                "responses": {"200": {"description": "Enlarged images, in input order",
                                      "content": {JSON: {"schema": _ref("BatchResponse")}}},
                              **_image_errors()},
            }),
        },
        "/v1/upscale": {
            "post": protected({
                "summary": "Upscale one raw image, or several multipart images",
                "operationId": "upscale",
                "description": "A raw body answers the image. Multipart with one `image` field answers "
                               "the image; with several, a zip (207 when some failed: each failure "
                               "is NAME.error.json inside). When every image failed, the first "
                               "image's error status.",
                "parameters": _parameters(settings),
                "requestBody": upload,
                "responses": {
                    "200": {"description": "The enlarged image, or a zip of them",
                            "headers": {"Content-Disposition": {"schema": {"type": "string"}}},
                            "content": {"image/*": {"schema": image_body},
                                        "application/zip": {"schema": image_body}}},
                    "207": {"description": "A zip where some images failed (NAME.error.json entries)",
                            "content": {"application/zip": {"schema": image_body}}},
                    **_image_errors(),
                },
            }),
        },
        **_job_paths(settings, protected, image_body, upload),
        "/v1/models": {
            "get": protected({
                "summary": "The models, their scales and options", "operationId": "models",
                "responses": {"200": {"description": "The model catalogue",
                                      "content": {JSON: {"schema": _ref("Models")}}}},
            }),
        },
        "/healthz": {
            "get": {"summary": "Liveness: the API process answers", "operationId": "healthz",
                    "responses": {"200": {"description": "Alive", "content": {JSON: {"schema": {
                        "type": "object", "required": ["status"],
                        "properties": {"status": {"type": "string"}}}}}}}},
        },
        "/readyz": {
            "get": {"summary": "Readiness: a processing backend answers a ping", "operationId": "readyz",
                    "responses": {"200": {"description": "Ready",
                                          "content": {JSON: {"schema": _ref("Readiness")}}},
                                  "503": _unavailable("No backend answered")}},
        },
        "/metrics": {
            "get": protected({"summary": "Prometheus metrics", "operationId": "metrics", "responses": {
                "200": {"description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}}}}}),
        },
        "/openapi.json": {
            "get": {"summary": "This document", "operationId": "openapi",
                    "responses": {"200": {"description": "OpenAPI 3 document",
                                          "content": {JSON: {"schema": {"type": "object"}}}}}},
        },
    }
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "Watercolor", "version": __version__,
                 "description": "Self-hosted batch image upscaling with pretrained super-resolution "
                                "models. Errors are JSON: {\"error\": {\"code\", \"message\"}}."},
        "paths": paths,
        "components": {"schemas": _schemas(settings)},
    }
    if secured:
        document["components"]["securitySchemes"] = {
            "bearerAuth": {"type": "http", "scheme": "bearer"},
            "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
    return document
