"""The baseline of API figures: a bare FastAPI JSON endpoint, served with the same server
settings as the platform, answering the same document (read from BARE_DOCUMENT)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI

app = FastAPI()
DOCUMENT: dict[str, Any] = json.loads(Path(os.environ["BARE_DOCUMENT"]).read_text())


@app.get("/object")
async def read_object() -> dict[str, Any]:
    return DOCUMENT
