"""Decode a web page's bytes to text: byte-order mark, HTTP header charset, ``<meta>`` charset,
then detection. Never raises on undecodable bytes.

Why this order: a byte-order mark is unambiguous; the HTTP header is what the server claims
and what browsers use first; a ``<meta>`` charset is the page's own claim. Claims are often
wrong (a page saved as Latin-1 behind a server that says UTF-8), so each claim is tried
strictly, and a claim that does not decode the bytes falls through to the next. Detection
(charset-normalizer) judges the bytes themselves; as a last resort UTF-8 with replacement
characters keeps every decodable character rather than losing the page.
"""

from __future__ import annotations

import codecs
import re

#: Bytes of the page searched for a ``<meta>`` charset (HTML says it must be in the first 1024;
#: real pages put it later, after long comments or scripts).
META_SCAN_BYTES = 8192
#: Bytes of the page given to detection (it is slow on whole pages; a sample decides).
DETECT_BYTES = 65536
_META = re.compile(rb"""<meta[^>]{0,512}?charset\s*=\s*["']?\s*([A-Za-z0-9._:\-]{1,40})""",
                   re.IGNORECASE)
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
         (codecs.BOM_UTF16_BE, "utf-16-be"))


def header_charset(content_type: str | None) -> str | None:
    """The ``charset=`` parameter of a Content-Type header value, or None."""
    if not content_type:
        return None
    for part in content_type.split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip("\"'") or None
    return None


def meta_charset(body: bytes) -> str | None:
    """The charset a ``<meta charset>`` or ``<meta http-equiv content=...charset=>`` names."""
    found = _META.search(body, 0, META_SCAN_BYTES)
    return found.group(1).decode("ascii") if found else None


def _codec(name: str | None) -> str | None:
    """The Python codec of a charset label, or None for an unknown label."""
    if not name:
        return None
    try:
        return codecs.lookup(name.strip().lower()).name
    except LookupError:
        return None


def decode_html(body: bytes, content_type: str | None = None) -> tuple[str, str, str]:
    """(text, charset used, where it came from: bom, header, meta, detected or fallback)."""
    for bom, name in _BOMS:
        if body.startswith(bom):
            return body[len(bom):].decode(name, "replace"), name, "bom"
    tried: set[str] = set()
    for source, label in (("header", header_charset(content_type)), ("meta", meta_charset(body))):
        name = _codec(label)
        if name is None or name in tried:
            continue
        tried.add(name)
        try:
            return body.decode(name), name, source
        except (UnicodeDecodeError, LookupError):
            continue  # a wrong claim: the bytes are not in that charset
    try:
        return body.decode("utf-8"), "utf-8", "detected"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(body[:DETECT_BYTES]).best()
    name = _codec(best.encoding) if best is not None else None
    if name:
        return body.decode(name, "replace"), name, "detected"
    return body.decode("utf-8", "replace"), "utf-8", "fallback"


__all__ = ["decode_html", "header_charset", "meta_charset"]
