"""Problem details (RFC 9457) as the API answers errors, checked."""

from __future__ import annotations

import json

import httpx

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, *fragments: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail", "code", "instance"} <= body.keys()
    text = json.dumps(body)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text}"
    return body
