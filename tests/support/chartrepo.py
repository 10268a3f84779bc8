"""Uploads to the platform's chart repository, as ChartMuseum's API takes them."""

from __future__ import annotations

import httpx

GZIP = {"content-type": "application/gzip"}


async def upload(client: httpx.AsyncClient, archive: bytes, **params: str) -> httpx.Response:
    return await client.post("/chartrepo/api/charts", content=archive, headers=GZIP, params=params)
