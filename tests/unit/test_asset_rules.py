"""The intent rules of static assets against Cloudflare's published tables (Workers Static Assets,
"HTML handling" and "not_found_handling"): which file a path serves, and where it redirects."""

import hashlib

import pytest

from duro.api.assets import content_type, decode_path, encode_path, resolve_intent

FILES = {"/file.html": b"file", "/folder/index.html": b"folder", "/index.html": b"home",
         "/404.html": b"root 404", "/blog/404.html": b"blog 404", "/bin": b"binary"}


def exists(path):
    body = FILES.get(path)
    return (hashlib.sha256(body).hexdigest()[:32], path) if body is not None else None


def outcome(path, html, not_found="none"):
    intent = resolve_intent(path, html, not_found, exists)
    if intent is None:
        return None
    if intent.redirect is not None:
        return ("307", intent.redirect)
    return (str(intent.status), intent.path)


# Cloudflare's table for dist/file.html and dist/folder/index.html, one column per mode.
TABLE = {
    "/file":               {"auto-trailing-slash": ("200", "/file.html"), "force-trailing-slash": ("307", "/file/"),
                            "drop-trailing-slash": ("200", "/file.html"), "none": None},
    "/file.html":          {"auto-trailing-slash": ("307", "/file"), "force-trailing-slash": ("307", "/file/"),
                            "drop-trailing-slash": ("307", "/file"), "none": ("200", "/file.html")},
    "/file/":              {"auto-trailing-slash": ("307", "/file"), "force-trailing-slash": ("200", "/file.html"),
                            "drop-trailing-slash": ("307", "/file"), "none": None},
    "/file/index":         {"auto-trailing-slash": ("307", "/file"), "force-trailing-slash": ("307", "/file/"),
                            "drop-trailing-slash": ("307", "/file"), "none": None},
    "/file/index.html":    {"auto-trailing-slash": ("307", "/file"), "force-trailing-slash": ("307", "/file/"),
                            "drop-trailing-slash": ("307", "/file"), "none": None},
    "/folder":             {"auto-trailing-slash": ("307", "/folder/"), "force-trailing-slash": ("307", "/folder/"),
                            "drop-trailing-slash": ("200", "/folder/index.html"), "none": None},
    "/folder.html":        {"auto-trailing-slash": ("307", "/folder/"), "force-trailing-slash": ("307", "/folder/"),
                            "drop-trailing-slash": ("307", "/folder"), "none": None},
    "/folder/":            {"auto-trailing-slash": ("200", "/folder/index.html"),
                            "force-trailing-slash": ("200", "/folder/index.html"),
                            "drop-trailing-slash": ("307", "/folder"), "none": None},
    "/folder/index":       {"auto-trailing-slash": ("307", "/folder/"), "force-trailing-slash": ("307", "/folder/"),
                            "drop-trailing-slash": ("307", "/folder"), "none": None},
    "/folder/index.html":  {"auto-trailing-slash": ("307", "/folder/"), "force-trailing-slash": ("307", "/folder/"),
                            "drop-trailing-slash": ("307", "/folder"), "none": ("200", "/folder/index.html")},
}


@pytest.mark.parametrize("mode", ["auto-trailing-slash", "force-trailing-slash", "drop-trailing-slash", "none"])
@pytest.mark.parametrize("path", list(TABLE))
def test_html_handling_matches_cloudflares_table(path, mode):
    assert outcome(path, mode) == TABLE[path][mode]


@pytest.mark.parametrize("mode", ["auto-trailing-slash", "force-trailing-slash", "drop-trailing-slash"])
def test_the_root_serves_index_html_and_index_html_redirects_to_the_root(mode):
    assert outcome("/", mode) == ("200", "/index.html")
    assert outcome("/index.html", mode) == ("307", "/")
    assert outcome("/bin", mode) == ("200", "/bin")  # a file without an extension is served as it is


def test_not_found_handling():
    assert outcome("/nope", "auto-trailing-slash") is None
    assert outcome("/nope/deeper", "auto-trailing-slash", "single-page-application") == ("200", "/index.html")
    # 404-page: the nearest 404.html walking up from the path, answered with status 404
    assert outcome("/blog/a/b", "auto-trailing-slash", "404-page") == ("404", "/blog/404.html")
    assert outcome("/elsewhere/x", "auto-trailing-slash", "404-page") == ("404", "/404.html")
    # a file that exists wins over the fallbacks
    assert outcome("/file", "auto-trailing-slash", "single-page-application") == ("200", "/file.html")


def test_paths_that_leave_the_folder_are_refused_however_encoded():
    for raw in ("/../secret", "/a/../../secret", "/%2e%2e/secret", "/%2E%2E/secret", "/..%2fsecret",
                "/a/%2e%2e%2f%2e%2e/secret", "/./x", "/%00x"):
        assert decode_path(raw) is None, raw
    assert decode_path("//a///b%20c") == "/a/b c"
    assert decode_path("/caf%C3%A9") == "/café"
    assert decode_path("/100%") == "/100%"  # not a valid escape: kept as it is


def test_canonical_encoding_is_encode_uri_component_per_segment():
    assert encode_path("/[boop] x/café") == "/%5Bboop%5D%20x/caf%C3%A9"
    assert encode_path("/a-b_c.d~e!(f)*'") == "/a-b_c.d~e!(f)*'"


def test_content_types():
    assert content_type("a.html") == "text/html; charset=utf-8"
    assert content_type("a.css") == "text/css; charset=utf-8"
    assert content_type("a.js") == "text/javascript; charset=utf-8"
    assert content_type("a.json") == "application/json"
    assert content_type("a.png") == "image/png"
    assert content_type("a.svg") == "image/svg+xml"
    assert content_type("a.wasm") == "application/wasm"
    assert content_type("noext") == "application/octet-stream"
