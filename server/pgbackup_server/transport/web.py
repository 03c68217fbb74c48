"""The dashboard's files, served by backupd's HTTP endpoints behind Envoy.

Envoy routes ``/``, ``/ui`` and ``/ui/...`` of the REST listener here, so the page
and the API share one origin. The files (``transport/ui/``) are read once at start
into a fixed table: a request can only ever name one of them, never a path on
disk. They hold no data, so they are served without a token; the page asks for
one and sends it to the API, which checks it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UI_DIR = Path(__file__).resolve().parent / "ui"
StartResponse = Callable[..., Any]

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# No inline script or style, nothing from elsewhere, and Trusted Types so that no
# string can become markup: the page builds its DOM from text nodes only.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'; "
       "require-trusted-types-for 'script'; trusted-types 'none'")
SECURITY_HEADERS = [
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    # Revalidated each time (304 when unchanged): an upgrade is seen at once.
    ("Cache-Control", "no-cache"),
]


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    content_type: str
    etag: str


class Site:
    """The dashboard: ``/`` (and ``/ui``, ``/ui/``) is the page, ``/ui/<file>`` its
    files. GET and HEAD only; 304 for a matching ``If-None-Match``."""

    def __init__(self, directory: Path = UI_DIR) -> None:
        self.files: dict[str, _File] = {}
        for path in sorted(directory.rglob("*")):
            if path.is_file() and path.suffix in _TYPES:
                body = path.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                url = "/ui/" + path.relative_to(directory).as_posix()
                self.files[url] = _File(body, _TYPES[path.suffix], etag)
        index = self.files.get("/ui/index.html")
        if index is None:
            raise RuntimeError(f"dashboard files missing in {directory}: reinstall backupd")
        for alias in ("/", "/ui", "/ui/"):
            self.files[alias] = index

    def handles(self, path: str) -> bool:
        return path in ("/", "/ui") or path.startswith("/ui/")

    def __call__(self, environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        found = self.files.get(environ.get("PATH_INFO", ""))
        if found is None:
            return _reply(start, "404 Not Found", 5, "no such dashboard file")
        if method not in ("GET", "HEAD"):
            return _reply(start, "405 Method Not Allowed", 12,
                          f"{method} is not allowed here; use GET", [("Allow", "GET, HEAD")])
        headers = [*SECURITY_HEADERS, ("ETag", found.etag)]
        if found.etag in environ.get("HTTP_IF_NONE_MATCH", ""):
            start("304 Not Modified", headers)
            return [b""]
        start("200 OK", [*headers, ("Content-Type", found.content_type),
                         ("Content-Length", str(len(found.body)))])
        return [b"" if method == "HEAD" else found.body]


def _reply(start: StartResponse, status: str, code: int, message: str,
           headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    """An error shaped like the API's: ``{"code", "message", "details"}``."""
    data = json.dumps({"code": code, "message": message, "details": []}).encode()
    start(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                   ("X-Content-Type-Options", "nosniff"), *(headers or [])])
    return [data]
