"""The API's documentation page, served with no network beyond this server: Swagger UI at
`/docs`, its script and style from the `fastapi-offline` package (FastAPI's own page loads
them from a CDN, which an air-gapped site cannot reach). No ReDoc: its page fetches a logo from
the internet, and one page that can also try the API is enough.

`/docs` signs in with the OAuth2 password flow the OpenAPI document declares (the console's
client, `edge-console`), so "Authorize" then "Try it out" works."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import (
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="Edge Platform API",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon.png",
        oauth2_redirect_url=OAUTH2_REDIRECT,
        # The public client of the password grant; it has no secret.
        init_oauth={"clientId": request.app.state.settings.oauth_client_id},
        swagger_ui_parameters={"persistAuthorization": True},
    )


@router.get(OAUTH2_REDIRECT)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


def install_docs(app: FastAPI) -> None:
    """The pages and their assets; call with `docs_url=None, redoc_url=None` on the app."""
    assets = resources.files("fastapi_offline") / "static"
    app.mount(ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")
    app.include_router(router)
