"""Helm values merged the way Helm merges them: maps deep-merged, everything else (lists
included) replaced by the later value; a null deletes the key, as `--set key=null` does."""

from __future__ import annotations

from typing import Any


def merge_values(base: dict[str, Any], *overrides: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for override in overrides:
        for key, value in override.items():
            current = result.get(key)
            if value is None:
                result.pop(key, None)
            elif isinstance(value, dict) and isinstance(current, dict):
                result[key] = merge_values(current, value)
            else:
                result[key] = value
    return result
