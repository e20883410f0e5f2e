"""Build data/web_sample/: small Common Crawl-style WARC files of real web pages.

The pages are Debian's HTML documentation packages (downloaded with ``apt-get download`` and
unpacked with ``dpkg-deb -x``): the Python 3.11 documentation (``python3.11-doc``, English,
PSF License 2.0) and the Debian Reference in German and French (``debian-reference-de``,
``debian-reference-fr``, GPL-2+). Each page becomes what Common Crawl writes for one fetch:
a ``request``, a ``response`` and a ``metadata`` record, each its own gzip member, after one
``warcinfo`` record. Besides the pages the files hold the cases a reader must survive:

* real non-HTML responses (PNG images, CSS, JavaScript, and the Debian Reference PDF,
  truncated as Common Crawl truncates large payloads, with ``WARC-Truncated: length``);
* an HTTP redirect (301) and a 404 page;
* an HTML page truncated by the crawler (``WARC-Truncated: length``);
* the same page fetched under two URLs (an exact duplicate after extraction);
* a German page whose HTTP header (and ``<meta>``) says UTF-8 while its bytes are Latin-1;
* an HTML bomb: a real page inside 100,000 nested ``<div>`` elements;
* a damaged gzip member (bytes zeroed inside a record's compressed data) and a member that
  holds no WARC record at all (a malformed header).

Deterministic (fixed record ids and dates): running it again gives the same bytes.
``_manifest.json`` (skipped by the readers: its name starts with ``_``) lists every record
with its offset and kind, for tests and the docs.

    python scripts/make_web_sample.py [--out data/web_sample] [--pages 140] [--source DIR]

``--source`` is a directory where the packages are already unpacked (``dpkg-deb -x``);
without it the script downloads them (``apt-get download``; run ``apt-get update`` once).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("python3.11-doc", "debian-reference-de", "debian-reference-fr")
PY_HTML = "usr/share/doc/python3.11/html"
DEBREF = "usr/share/debian-reference"
PY_URL = "https://docs.python.org/3.11/"
DEBREF_URL = "https://www.debian.org/doc/manuals/debian-reference/"
START = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
#: Bytes of a crawled payload kept when it is "truncated by the crawler".
TRUNCATE_AT = 96 * 1024
BOMB_DEPTH = 100_000


def unpack(dest: Path) -> Path:
    """Download the documentation packages and unpack them under ``dest``."""
    debs = dest / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", *PACKAGES], cwd=debs, check=True)
    root = dest / "root"
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def python_pages(root: Path, count: int) -> list[Path]:
    """``count`` pages of the Python docs, spread over all sections, each at most 90 KB."""
    base = root / PY_HTML
    pages = sorted(p for p in base.rglob("*.html")
                   if p.stat().st_size <= 90_000 and "_static" not in p.parts
                   and p.name not in ("genindex.html", "search.html", "py-modindex.html"))
    step = max(1, len(pages) // count)
    return pages[::step][:count]


def debref_pages(root: Path) -> list[Path]:
    """The shorter chapters of the Debian Reference, in German and French."""
    base = root / DEBREF
    names = ["pr01", "apa", "ch03", "ch04", "ch05", "ch08"]
    return [base / f"{n}.{lang}.html" for lang in ("de", "fr") for n in names]


class Warc:
    """Records written one gzip member each; remembers every record's offset and kind."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: list[bytes] = []
        self.records: list[dict] = []
        self.clock = 0

    def _date(self) -> str:
        self.clock += 1
        return (START + timedelta(seconds=self.clock)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _member(self, record, kind: str, **info) -> None:
        buf = io.BytesIO()
        WARCWriter(buf, gzip=True).write_record(record)
        self.add_raw(buf.getvalue(), kind, **info)

    def add_raw(self, member: bytes, kind: str, **info) -> None:
        offset = sum(len(m) for m in self.members)
        self.members.append(member)
        self.records.append({"offset": offset, "kind": kind, **info})

    def _headers(self, url: str, rtype: str, extra: dict | None = None) -> dict:
        rid = uuid.uuid5(uuid.NAMESPACE_URL, f"{self.name} {rtype} {url} {len(self.members)}")
        return {"WARC-Record-ID": f"<urn:uuid:{rid}>", "WARC-Date": self._date(), **(extra or {})}

    def warcinfo(self) -> None:
        w = WARCWriter(io.BytesIO(), gzip=True)
        info = {"software": "curator_stages scripts/make_web_sample.py",
                "description": "Debian documentation pages in Common Crawl's WARC layout"}
        rec = w.create_warcinfo_record(self.name, info)
        for key, value in self._headers(self.name, "warcinfo").items():
            rec.rec_headers.replace_header(key, value)
        self._member(rec, "warcinfo")

    def fetch(self, url: str, body: bytes, content_type: str, *, status: str = "200 OK",
              kind: str = "html", extra_http: list | None = None,
              truncated: bool = False, **info) -> None:
        """request + response + metadata, as Common Crawl writes one fetch."""
        w = WARCWriter(io.BytesIO(), gzip=True)
        path = "/" + url.split("/", 3)[3] if url.count("/") >= 3 else "/"
        host = url.split("/")[2]
        req = StatusAndHeaders(f"GET {path} HTTP/1.1", [("Host", host), (
            "User-Agent", "CCBot/2.0 (https://commoncrawl.org/faq/)"), ("Accept", "*/*")],
            is_http_request=True)
        self._member(w.create_warc_record(url, "request", payload=io.BytesIO(b""),
                                          http_headers=req,
                                          warc_headers_dict=self._headers(url, "request")),
                     "request")
        http = StatusAndHeaders(status, [("Content-Type", content_type),
                                         ("Content-Length", str(len(body))),
                                         *(extra_http or [])], protocol="HTTP/1.1")
        # Common Crawl's own payload type (by content sniffing), which datatrove's reader reads.
        warc_extra = {"WARC-Identified-Payload-Type": content_type.split(";")[0],
                      **({"WARC-Truncated": "length"} if truncated else {})}
        rec = w.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http,
                                   warc_headers_dict=self._headers(url, "response", warc_extra))
        self._member(rec, kind, url=url, truncated=truncated, **info)
        meta = f"fetchTimeMs: {7 + len(body) % 500}\r\ncharset-detected: UTF-8\r\n".encode()
        self._member(w.create_warc_record(url, "metadata", payload=io.BytesIO(meta),
                                          warc_content_type="application/warc-fields",
                                          warc_headers_dict=self._headers(url, "metadata")),
                     "metadata")

    def write(self, directory: Path) -> Path:
        path = directory / self.name
        path.write_bytes(b"".join(self.members))
        return path


def damaged(member: bytes) -> bytes:
    """The member with 64 bytes zeroed in the middle of its compressed data: gzip's CRC and
    deflate itself then fail, as a bad disk or a cut transfer leaves a member."""
    cut = bytearray(member)
    mid = len(cut) // 2
    cut[mid:mid + 64] = b"\x00" * 64
    return bytes(cut)


def build(root: Path, out: Path, pages: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    py = root / PY_HTML
    manifest: dict = {"sources": {
        "python3.11-doc": "Python 3.11 documentation, Debian package python3.11-doc; "
                          "PSF License Version 2 (see /usr/share/doc/python3.11-doc/copyright)",
        "debian-reference-de/-fr": "Debian Reference 2.100 (German, French), Debian packages "
                                   "debian-reference-de/-fr; GPL-2+ (Osamu Aoki and translators)",
    }, "files": {}}

    # File 0: English pages (Python docs), with non-HTML responses, a redirect and a 404.
    a = Warc("web-00000.warc.gz")
    a.warcinfo()
    chosen = python_pages(root, pages)
    for i, page in enumerate(chosen):
        rel = page.relative_to(py).as_posix()
        a.fetch(PY_URL + rel, page.read_bytes(), "text/html; charset=utf-8", lang="en")
        if i == 3:
            a.fetch(PY_URL + "_static/py.png", (py / "_static/py.png").read_bytes(), "image/png",
                    kind="non_html")
            a.fetch(PY_URL + "_static/pydoctheme.css", (py / "_static/pydoctheme.css").read_bytes(),
                    "text/css", kind="non_html")
        if i == 10:
            a.fetch(PY_URL + "_static/doctools.js", (py / "_static/doctools.js").read_bytes(),
                    "application/javascript", kind="non_html")
            a.fetch(PY_URL.replace("https:", "http:"), b"", "text/html", status="301 Moved "
                    "Permanently", kind="redirect", extra_http=[("Location", PY_URL)])
        if i == 20:  # a crawl reaches the same page under a second URL
            a.fetch(PY_URL + rel + "?highlight=python", page.read_bytes(),
                    "text/html; charset=utf-8", kind="html", lang="en", duplicate_of=PY_URL + rel)
        if i == 30:
            # A 404 answered with a real page (the docs' search page, as many sites do).
            a.fetch(PY_URL + "no-such-page.html", (py / "search.html").read_bytes(),
                    "text/html; charset=utf-8", status="404 Not Found", kind="http_error")
    big = py / "library/stdtypes.html"
    a.fetch(PY_URL + "library/stdtypes.html", big.read_bytes()[:TRUNCATE_AT],
            "text/html; charset=utf-8", truncated=True, lang="en")

    # File 1: German and French pages, the PDF, the bad cases.
    b = Warc("web-00001.warc.gz")
    b.warcinfo()
    for i, page in enumerate(debref_pages(root)):
        lang = page.name.split(".")[1]
        b.fetch(DEBREF_URL + page.name, page.read_bytes(), "text/html; charset=utf-8", lang=lang)
        if i == 2:
            pdf = (root / DEBREF / "debian-reference.de.pdf").read_bytes()
            b.fetch(DEBREF_URL + "debian-reference.de.pdf", pdf[:TRUNCATE_AT], "application/pdf",
                    kind="non_html", truncated=True)
        if i == 4:  # a damaged member: the response of the next fetch
            b.fetch(DEBREF_URL + "ch06.de.html", (root / DEBREF / "ch06.de.html").read_bytes(),
                    "text/html; charset=utf-8", lang="de")
            resp = len(b.members) - 2
            b.members[resp] = damaged(b.members[resp])
            b.records[resp]["kind"] = "damaged"
        if i == 6:  # a gzip member that holds no WARC record
            junk = io.BytesIO()
            import gzip

            with gzip.GzipFile(fileobj=junk, mode="wb", mtime=0) as g:
                g.write(b"HTTP/1.1 200 OK\r\nthis is not a WARC record header\r\n\r\n")
            b.add_raw(junk.getvalue(), "malformed")
    wrong = (root / DEBREF / "ch07.de.html").read_text("utf-8")
    b.fetch(DEBREF_URL + "ch07.de.html", wrong.encode("iso-8859-1", "xmlcharrefreplace"),
            "text/html; charset=utf-8", lang="de", wrong_charset="iso-8859-1")
    inner = (root / DEBREF / "apa.fr.html").read_text("utf-8")
    body_at = inner.find("<body")
    bomb = (inner[:body_at] + "<body>" + "<div>" * BOMB_DEPTH + inner[body_at:]
            + "</div>" * BOMB_DEPTH).encode("utf-8")
    b.fetch(DEBREF_URL + "bomb.html", bomb, "text/html; charset=utf-8", kind="html",
            lang="fr", bomb_depth=BOMB_DEPTH)

    for warc in (a, b):
        path = warc.write(out)
        manifest["files"][warc.name] = {
            "bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "records": warc.records,
        }
    (out / "_manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "data" / "web_sample"))
    parser.add_argument("--pages", type=int, default=140, help="Python docs pages in file 0")
    parser.add_argument("--source", help="directory where the packages are already unpacked")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.source) if args.source else unpack(Path(tmp))
        manifest = build(root, Path(args.out), args.pages)
    for name, f in manifest["files"].items():
        kinds: dict[str, int] = {}
        for r in f["records"]:
            kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
        print(f"{os.path.join(args.out, name)}: {f['bytes'] / 1e6:.2f} MB, {kinds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
