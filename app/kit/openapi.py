"""OpenAPI for bodies that routes decode themselves (JSON or YAML), so docs and generated
clients still see the request schema."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

_BODY_MODELS: list[type[BaseModel]] = []

OBJECT_MEDIA_TYPES = ("application/json", "application/yaml")


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route whose body is `model`, sent as JSON or YAML."""
    if model not in _BODY_MODELS:
        _BODY_MODELS.append(model)
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {
        "requestBody": {
            "required": True,
            "content": {media: {"schema": ref} for media in OBJECT_MEDIA_TYPES},
        }
    }


def merge_patch_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a JSON merge patch (RFC 7386) of `model`: any subset of its fields."""
    if model not in _BODY_MODELS:
        _BODY_MODELS.append(model)
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/merge-patch+json": {
                    "schema": {
                        "type": "object",
                        "description": f"RFC 7386 merge patch of a {model.__name__}",
                    }
                }
            },
        }
    }


def add_body_schemas(openapi: dict[str, Any]) -> None:
    if not _BODY_MODELS:
        return
    _, definitions = models_json_schema(
        [(model, "validation") for model in _BODY_MODELS],
        ref_template="#/components/schemas/{model}",
    )
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in definitions.get("$defs", {}).items():
        schemas.setdefault(name, schema)


def mark_public_operations(openapi: dict[str, Any]) -> None:
    """Operations that declare no security scheme are public: say so (`security: []`), so
    that a reader or a generated client need not guess."""
    for operations in openapi.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and "responses" in operation:
                operation.setdefault("security", [])
