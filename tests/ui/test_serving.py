"""The dashboard's files through Envoy, on the API's origin: only its own files, with
a strict Content-Security-Policy, without a token, also with metrics disabled."""

from __future__ import annotations

import hashlib
import re
import urllib.error
import urllib.request

TOKEN = "ui-token-" + "y" * 32
DIGEST = hashlib.sha256(TOKEN.encode()).hexdigest()


def get(url: str, *, method: str = "GET", headers: dict[str, str] | None = None):
    req = urllib.request.Request(url, method=method, headers=headers or {},
                                 data=b"{}" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers, err.read()


def test_page_and_files_are_served_safely_without_a_token(start_app):
    stack = start_app(auth={"tokenSha256": [DIGEST]}, metrics={"enabled": False,
                                                              "address": None})
    code, headers, body = get(stack.http + "/")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "require-trusted-types-for 'script'" in csp and "default-src 'none'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    html = body.decode()
    # Every script is a file of the site; none inline, nothing from elsewhere.
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="/ui/' in attrs and not text.strip()
                           for attrs, text in scripts)
    assert "http://" not in html and "https://" not in html
    for path in ("/ui", "/ui/", "/ui/index.html"):
        assert get(stack.http + path)[2] == body
    code, headers, js = get(stack.http + "/ui/app.js")
    assert code == 200 and headers["Content-Type"].startswith("text/javascript")
    assert b"innerHTML" not in js
    # Revalidation, HEAD, and nothing but GET/HEAD.
    etag = headers["ETag"]
    assert get(stack.http + "/ui/app.js", headers={"If-None-Match": etag})[0] == 304
    code, _, empty = get(stack.http + "/ui/app.js", method="HEAD")
    assert code == 200 and empty == b""
    code, headers, _ = get(stack.http + "/", method="POST")
    assert code == 405 and headers["Allow"] == "GET, HEAD"
    # Only the site's own files: no path reaches the disk.
    for path in ("/ui/../pyproject.toml", "/ui/%2e%2e/web.py", "/ui/missing.js",
                 "/ui/pages/", "/ui/web.py"):
        assert get(stack.http + path)[0] == 404, path
    # The API and /metrics still need the token; metrics are off here.
    assert get(stack.http + "/api/v1/backup/stats")[0] == 401
    assert get(stack.http + "/metrics")[0] == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert get(stack.http + "/api/v1/backup/stats", headers=auth)[0] == 200
    assert get(stack.http + "/metrics", headers=auth)[0] == 404
