"""Interactive docs (TOKEN_BROKER_DOCS): Swagger UI from installed files, under a strict CSP.

FastAPI's own pages load unpinned scripts from a CDN and start them with an inline script. Here
every byte comes from the installed packages: Swagger UI's bundle and stylesheet as the
fastapi-offline package ships them (only its files are used, none of its code), and our own
start-up script. The page may run only those scripts and fetch nothing: the OpenAPI document
is in the page as a JSON data block, so `connect-src 'none'` holds, and no script in the
broker's origin can send the guard header and read a token.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response

from service.config import DOCS_ASSETS_PACKAGE, DOCS_EXTRA

OWN_STATIC = Path(__file__).parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",  # the two files below: no inline script, no eval, no other origin
        "style-src 'self'",
        "img-src 'self' data:",  # the stylesheet's icons are data: URLs
        "connect-src 'none'",  # nothing to fetch: the document is in the page
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - API docs</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script id="openapi" type="application/json">{document}</script>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""


def assets_dir() -> Path | None:
    """Where the docs extra's Swagger UI files are, or None if it is not installed."""
    spec = importlib.util.find_spec(DOCS_ASSETS_PACKAGE)  # found, not imported: we run none of it
    if spec is None or not spec.submodule_search_locations:
        return None
    static = Path(next(iter(spec.submodule_search_locations))) / "static"
    return static if (static / "swagger-ui-bundle.js").is_file() else None


def install_docs(app: FastAPI) -> None:
    """Serve /docs and its three files. Settings refuse TOKEN_BROKER_DOCS without the extra."""
    static = assets_dir()
    if static is None:
        raise RuntimeError(f"TOKEN_BROKER_DOCS needs the docs extra: pip install '{DOCS_EXTRA}'")
    files = {
        "/docs/swagger-ui-bundle.js": (static / "swagger-ui-bundle.js", "text/javascript"),
        "/docs/swagger-ui.css": (static / "swagger-ui.css", "text/css"),
        "/docs/init.js": (OWN_STATIC / "docs-init.js", "text/javascript"),
    }
    router = APIRouter(include_in_schema=False)
    page: list[bytes] = []  # rendered on first use: the document needs every route in place

    @router.get("/docs")
    async def docs(request: Request) -> Response:
        _check(request)
        if not page:
            page.append(_render_page(app.title, app.openapi()))
        return Response(page[0], media_type="text/html; charset=utf-8", headers=HEADERS)

    for path, (file, media_type) in files.items():
        router.add_api_route(path, _serve_file(file.read_bytes(), media_type), methods=["GET"])
    app.include_router(router)


def _serve_file(body: bytes, media_type: str) -> Callable[[Request], Any]:
    async def serve(request: Request) -> Response:
        _check(request)
        return Response(body, media_type=media_type, headers=HEADERS)

    return serve


def _check(request: Request) -> None:
    # The peer and Host checks (DNS rebinding); not the guard header, which a browser opening
    # a page cannot send.
    request.app.state.guard.check_page(request.scope.get("client"), request.scope["headers"])


def _render_page(title: str, document: dict[str, Any]) -> bytes:
    # "<" escaped, so no text in the document can close the data block and start markup.
    data = json.dumps(document, separators=(",", ":")).replace("<", "\\u003c")
    safe_title = title.replace("&", "&amp;").replace("<", "&lt;")
    return PAGE.format(title=safe_title, document=data).encode()
