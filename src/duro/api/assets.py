"""Static assets, served as Cloudflare's Workers Static Assets serves them.

Owns three things: the *intent* rules (which file a path names under ``html_handling`` and
``not_found_handling``, and which paths redirect to their canonical form — a pure function of the
path and an ``exists`` lookup), the file store (a folder read safely, with ETags and content
types), and the routing question the front asks before a request may enter Python
(``run_worker_first``, Cloudflare's router rules). ``env.<binding>.fetch(request)`` is
:meth:`AssetServer.fetch`.

It never runs user code, never serves a file outside its folder (``..`` or ``%2e%2e`` segments, NUL
bytes and symlinks leading out are refused as "no such asset"), and never writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
import pathlib
import re
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote, unquote, urlsplit

from ..config import Assets
from .fetch import FetchResponse, Request, Response, as_fetch_response

__all__ = ["AssetServer", "Intent", "resolve_intent", "content_type"]

# "have the browser check in with the server to make sure its local cache is valid"
CACHE_CONTROL = "public, max-age=0, must-revalidate"
# Files of the folder that configure the asset server rather than being assets.
_META_FILES = frozenset({".assetsignore", "_headers", "_redirects"})
_READ_IN_THREAD = 1 << 20  # bytes; bigger files are read off the event loop

# Content types as Cloudflare's upload tool assigns them (the ``mime`` package); the table keeps
# the common web types the same on every Python version, ``mimetypes`` covers the rest.
_TYPES = {
    ".html": "text/html", ".htm": "text/html", ".css": "text/css", ".js": "text/javascript",
    ".mjs": "text/javascript", ".cjs": "application/node", ".json": "application/json",
    ".map": "application/json", ".txt": "text/plain", ".md": "text/markdown", ".csv": "text/csv",
    ".xml": "application/xml", ".svg": "image/svg+xml", ".png": "image/png", ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp", ".avif": "image/avif",
    ".ico": "image/vnd.microsoft.icon", ".wasm": "application/wasm", ".woff": "font/woff",
    ".woff2": "font/woff2", ".ttf": "font/ttf", ".otf": "font/otf", ".pdf": "application/pdf",
    ".webmanifest": "application/manifest+json", ".mp4": "video/mp4", ".webm": "video/webm",
    ".mp3": "audio/mpeg", ".wav": "audio/wav", ".ogg": "audio/ogg", ".zip": "application/zip",
    ".py": "text/x-python", ".toml": "application/toml", ".yaml": "text/yaml", ".yml": "text/yaml",
}


def content_type(name: str) -> str:
    """The Content-Type of a file called ``name``; text types carry ``charset=utf-8``."""
    ext = os.path.splitext(name)[1].lower()
    ctype = _TYPES.get(ext) or mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"
    if ctype.startswith("text/") and "charset" not in ctype:
        ctype += "; charset=utf-8"
    return ctype


# --- the intent rules (pure) --------------------------------------------------------------------


@dataclass(frozen=True)
class Intent:
    """What a path resolves to: a file served with ``status`` (200, or 404 for a 404 page), or a
    redirect to the canonical ``redirect`` path. ``etag`` identifies the file's content."""

    etag: str | None = None
    path: str | None = None  # the asset's path in the folder, "/a/b.html"
    status: int = 200
    redirect: str | None = None


Exists = Callable[[str], "tuple[str, str] | None"]  # asset path -> (etag, asset path), or None


def resolve_intent(path: str, html_handling: str, not_found_handling: str, exists: Exists,
                   _skip_redirects: bool = False) -> Intent | None:
    """Which asset a decoded request path names, Cloudflare's way. ``exists(p)`` says whether the
    folder has a file at asset path ``p``. None: no asset (the Worker runs, or 404)."""
    r = _Resolver(html_handling, not_found_handling, exists)
    return r.intent(path, _skip_redirects)


class _Resolver:
    """The four ``html_handling`` modes. Each tries the request path's special shapes first
    (``/x/index``, ``/x/index.html``, ``/x/``, ``/x.html``) — serving, or redirecting when a
    canonical path serves the very same file — then the path itself and its ``.html`` /
    ``/index.html`` forms, then ``not_found_handling``."""

    def __init__(self, html: str, not_found: str, exists: Exists) -> None:
        self.html, self.not_found, self.exists = html, not_found, exists

    def serve(self, path: str, status: int = 200) -> Intent | None:
        found = self.exists(path)
        return Intent(etag=found[0], path=found[1], status=status) if found else None

    def redirect(self, file: str, dest: str, skip: bool) -> Intent | None:
        """Redirect to ``dest`` only if nothing is stored at ``dest`` itself and ``dest`` would
        serve exactly ``file`` (so a redirect never lands on a different page or a 404)."""
        if skip or self.exists(dest):
            return None
        there = self.intent(dest, True)
        found = self.exists(file)
        if there is not None and there.etag is not None and found is not None and there.etag == found[0]:
            return Intent(redirect=dest)
        return None

    def intent(self, p: str, skip: bool) -> Intent | None:
        mode = self.html
        if mode == "none":
            return self.serve(p) or self.missing(p)
        exact = self.serve(p)
        first: list[Callable[[], Intent | None]] = []
        if p.endswith("/index"):
            if exact:
                return exact
            stem = p[: -len("/index")]
            if mode == "auto-trailing-slash":
                first = [lambda: self.redirect(p + ".html", stem + "/", skip),
                         lambda: self.redirect(stem + ".html", stem, skip)]
            elif mode == "force-trailing-slash":
                first = [lambda: self.redirect(p + ".html", stem + "/", skip),
                         lambda: self.redirect(stem + ".html", stem + "/", skip)]
            elif p == "/index":
                first = [lambda: self.redirect("/index.html", "/", skip)]
            else:
                first = [lambda: self.redirect(stem + ".html", stem, skip),
                         lambda: self.redirect(p + ".html", stem, skip)]
        elif p.endswith("/index.html"):
            stem = p[: -len("/index.html")]
            if mode == "auto-trailing-slash":
                first = [lambda: self.redirect(p, stem + "/", skip),
                         lambda: self.redirect(stem + ".html", stem, skip)]
            elif mode == "force-trailing-slash":
                first = [lambda: self.redirect(p, stem + "/", skip),
                         lambda: self.redirect(stem + ".html", stem + "/", skip)]
            elif p == "/index.html":
                first = [lambda: self.redirect("/index.html", "/", skip)]
            else:  # with both /x.html and /x/index.html, /x/index.html stays where it is
                first = [lambda: self.redirect(p, stem, skip), lambda: exact,
                         lambda: self.redirect(stem + ".html", stem, skip)]
        elif p.endswith("/"):
            stem = p[:-1]
            if mode == "auto-trailing-slash":
                first = [lambda: self.serve(p + "index.html"), lambda: self.redirect(stem + ".html", stem, skip)]
            elif mode == "force-trailing-slash":
                first = [lambda: self.serve(p + "index.html"), lambda: self.serve(stem + ".html")]
            elif p == "/":
                first = [lambda: self.serve("/index.html")]
            else:
                first = [lambda: self.redirect(stem + ".html", stem, skip),
                         lambda: self.redirect(stem + "/index.html", stem, skip)]
        elif p.endswith(".html"):
            stem = p[: -len(".html")]
            if mode == "auto-trailing-slash":
                first = [lambda: self.redirect(p, stem, skip),
                         lambda: self.redirect(stem + "/index.html", stem + "/", skip)]
            elif mode == "force-trailing-slash":  # with both, /x.html stays where it is
                first = [lambda: self.redirect(p, stem + "/", skip), lambda: exact,
                         lambda: self.redirect(stem + "/index.html", stem + "/", skip)]
            else:
                first = [lambda: self.redirect(p, stem, skip),
                         lambda: self.redirect(stem + "/index.html", stem, skip)]
        for attempt in first:
            found = attempt()
            if found is not None:
                return found
        if exact:
            return exact
        if mode == "auto-trailing-slash":
            rest = [lambda: self.serve(p + ".html"), lambda: self.redirect(p + "/index.html", p + "/", skip)]
        elif mode == "force-trailing-slash":
            rest = [lambda: self.redirect(p + ".html", p + "/", skip),
                    lambda: self.redirect(p + "/index.html", p + "/", skip)]
        else:
            rest = [lambda: self.serve(p + ".html"), lambda: self.serve(p + "/index.html")]
        for attempt in rest:
            found = attempt()
            if found is not None:
                return found
        return self.missing(p)

    def missing(self, p: str) -> Intent | None:
        if self.not_found == "single-page-application":
            return self.serve("/index.html")
        if self.not_found == "404-page":  # the nearest 404.html, walking up from the path
            folder = p
            while folder:
                folder = folder[: folder.rfind("/")]
                found = self.serve(folder + "/404.html", 404)
                if found:
                    return found
        return None


# --- paths --------------------------------------------------------------------------------------


def decode_path(raw: str) -> str | None:
    """Percent-decode each segment and collapse repeated slashes, as Cloudflare does; None for a
    path that tries to leave the folder (a ``.`` or ``..`` segment, however encoded) or holds NUL."""
    decoded = re.sub(r"/+", "/", "/".join(unquote(seg, errors="strict") if _decodable(seg) else seg
                                          for seg in raw.split("/")))
    if "\0" in decoded or any(seg in (".", "..") for seg in decoded.split("/")):
        return None
    return decoded


def _decodable(seg: str) -> bool:
    try:
        unquote(seg, errors="strict")
        return True
    except UnicodeDecodeError:
        return False


def encode_path(path: str) -> str:
    """The canonical (encoded) form of a decoded path: each segment as encodeURIComponent leaves it."""
    return "/".join(quote(seg, safe="!~*'()") for seg in path.split("/"))


def _glob(rule: str) -> re.Pattern[str]:
    """A run_worker_first rule: ``*`` matches anything (slashes too), the rest literally."""
    return re.compile("^" + ".*".join(re.escape(part) for part in rule.split("*")) + "$")


# --- the folder ---------------------------------------------------------------------------------


class _Folder:
    """The asset folder, read safely. An ETag is a hash of the file's bytes, computed once per
    version of the file (size, mtime and inode)."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.root = os.path.realpath(directory)
        self._etags: dict[str, tuple[tuple[int, int, int], str]] = {}
        self._ignored = _read_ignore(pathlib.Path(self.root) / ".assetsignore")

    def file(self, asset_path: str) -> str | None:
        """The real file behind asset path ``/a/b``, or None (missing, a folder, ignored, or outside)."""
        rel = asset_path.lstrip("/")
        if not rel or rel in _META_FILES or self._ignored(rel):
            return None
        real = os.path.realpath(os.path.join(self.root, rel))
        if not real.startswith(self.root + os.sep) or not os.path.isfile(real):
            return None
        return real

    def exists(self, asset_path: str) -> tuple[str, str] | None:
        real = self.file(asset_path)
        if real is None:
            return None
        try:
            st = os.stat(real)
        except OSError:
            return None
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        cached = self._etags.get(real)
        if cached is not None and cached[0] == key:
            return cached[1], asset_path
        h = hashlib.sha256()
        try:
            with open(real, "rb") as f:
                while chunk := f.read(1 << 16):
                    h.update(chunk)
        except OSError:
            return None
        etag = h.hexdigest()[:32]
        self._etags[real] = (key, etag)
        return etag, asset_path


def _read_ignore(path: pathlib.Path) -> Callable[[str], bool]:
    """``.assetsignore`` (gitignore syntax; ``!`` re-inclusion is not supported): files it names
    are not assets."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return lambda rel: False
    import fnmatch
    patterns = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        anchored = "/" in line.rstrip("/")
        patterns.append((line.strip("/"), anchored))

    def ignored(rel: str) -> bool:
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        for pat, anchored in patterns:
            for prefix in prefixes:
                target = prefix if anchored else prefix.rsplit("/", 1)[-1]
                if fnmatch.fnmatchcase(target, pat):
                    return True
        return False

    return ignored


# --- serving ------------------------------------------------------------------------------------


def _empty(status: int, headers: Any = None) -> Response:
    return Response(None, status=status, headers=headers)


class AssetServer:
    """One project's static assets: ``env.ASSETS`` (its :meth:`fetch`) and the front's
    :meth:`route`."""

    def __init__(self, config: Assets) -> None:
        self.config = config
        self._folder = _Folder(config.directory)
        rules = config.run_worker_first if isinstance(config.run_worker_first, tuple) else ()
        self._worker_rules = [_glob(r) for r in rules if not r.startswith("!")]
        self._asset_rules = [_glob(r[1:]) for r in rules if r.startswith("!")]

    def __repr__(self) -> str:
        return f"<Fetcher assets {self.config.directory}>"

    async def fetch(self, request: Any, init: Any = None, **kwargs: Any) -> FetchResponse:
        """``env.ASSETS.fetch(request)``: the asset for a request (a Request, or a URL with
        fetch-style options), or Cloudflare's 404 / 405 / 307 / 304 answers."""
        if not isinstance(request, Request):
            options = {**dict(init or {}), **kwargs}
            request = Request(getattr(request, "url", request), method=options.get("method"),
                              headers=options.get("headers"))
        return as_fetch_response(await self.respond(request, self.config.not_found_handling))

    async def route(self, request: Request, *, has_worker: bool) -> Response | None:
        """The front's question: a Response when the assets answer this request without the
        Worker, None when the Worker must run (Cloudflare's router, rule by rule)."""
        path = urlsplit(request.url).path or "/"
        if any(r.match(path) for r in self._asset_rules):  # "!/x/*": always the assets
            return await self.respond(request, self.config.not_found_handling)
        if self.config.run_worker_first is True or any(r.match(path) for r in self._worker_rules):
            return None
        if not has_worker:
            return await self.respond(request, self.config.not_found_handling)
        # With a Worker, a miss goes to the Worker; only a browser navigation gets the SPA or 404
        # page first (when the navigation flag is on).
        navigate = self.config.navigation_prefers_assets and request.headers.get("sec-fetch-mode") == "navigate"
        probe = self.config.not_found_handling if navigate else "none"
        if self._intent(request, probe)[1] is None:
            return None
        return await self.respond(request, self.config.not_found_handling)

    def _intent(self, request: Request, not_found: str) -> tuple[str, Intent | None, str | None]:
        raw = urlsplit(request.url).path or "/"
        decoded = decode_path(raw)
        if decoded is None:
            return raw, None, None
        return raw, resolve_intent(decoded, self.config.html_handling, not_found, self._folder.exists), decoded

    async def respond(self, request: Request, not_found: str) -> Response:
        raw, intent, decoded = self._intent(request, not_found)
        if intent is None or decoded is None:
            return _empty(404)
        method = request.method.upper()
        if method not in ("GET", "HEAD"):
            return _empty(405)
        query = urlsplit(request.url).query
        canonical = encode_path(intent.redirect or decoded)
        if intent.redirect is not None or canonical != raw:
            return _empty(307, {"location": canonical + (f"?{query}" if query else "")})
        assert intent.path is not None and intent.etag is not None
        headers = {"etag": f'"{intent.etag}"', "content-type": content_type(intent.path)}
        if not request.headers.has("authorization") and not request.headers.has("range"):
            headers["cache-control"] = CACHE_CONTROL
        if request.headers.get("if-none-match", "") in (f'"{intent.etag}"', f'W/"{intent.etag}"'):
            return _empty(304, headers)
        real = self._folder.file(intent.path)
        if real is None:  # removed since it was looked up
            return _empty(404)
        try:
            size = os.path.getsize(real)
            if method == "HEAD":
                headers["content-length"] = str(size)
                return _empty(intent.status, headers)
            body = (await asyncio.to_thread(_read, real)) if size > _READ_IN_THREAD else _read(real)
        except OSError:
            return _empty(404)
        return Response(body, status=intent.status, headers=headers)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
