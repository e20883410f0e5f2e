"""Drop documents by their URL: a domain blocklist and banned URL substrings.

Web crawls hold whole sites nobody wants in training text (adult, malware, spam farms). Those are
known by domain, and lists of them are kept by others (the UT1 blacklists FineWeb uses, for
example), so the filter reads a list the user gives instead of judging text.

- ``blocklist``: a file, local or any fsspec URL (``s3://...``, ``https://...``; ``.gz``/``.zst``
  read by their suffix), one domain per line; ``#`` starts a comment, blank lines are skipped,
  a leading ``*.`` or ``.`` is ignored, and of a hosts-file line (``0.0.0.0 example.com``)
  the last field is the domain. ``blocked_domains`` adds domains given inline.
  A domain blocks itself and every subdomain: ``example.com`` blocks ``example.com`` and
  ``www.example.com``, never ``notexample.com``.
- ``banned_substrings``: a URL that contains any of them (any case) is dropped.

Drop reasons: ``url_domain`` (checked first), then ``url_substring``. A document without a URL
(null or empty) passes: there is nothing to judge. ``data/url_blocklist_example.txt`` is a small
example list.

Identity: the list's SHA-256 is a parameter (read when the stage is built), so editing the file
invalidates the stage's checkpoints. Each worker process reads the list once, in :meth:`setup`.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any, Sequence
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator_stages.stage import ProcessingStage, record_drops
from curator_stages.tasks import DocumentBatch

URL_DOMAIN = "url_domain"
URL_SUBSTRING = "url_substring"


def parse_domains(text: str) -> frozenset[str]:
    """The domains of a blocklist's text (format in the module docstring)."""
    domains = set()
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:  # a hosts-file line ("0.0.0.0 example.com") names the domain last
            domains.add(_normalise_domain(fields[-1]))
    domains.discard("")
    return frozenset(domains)


def _normalise_domain(domain: str) -> str:
    return domain.strip().lower().removeprefix("*.").strip(".")


def _read_blocklist(path: str) -> bytes:
    import fsspec

    from curator_stages.io.filesystem import storage_options_for

    with fsspec.open(path, "rb", compression="infer", **storage_options_for(path)) as f:
        return f.read()


def host_of(url: str) -> str:
    """The lower-cased host of ``url`` without port, user info or trailing dot ("" if none)."""
    try:
        host = urlsplit(url.strip()).hostname or ""
    except ValueError:  # e.g. an invalid IPv6 literal
        return ""
    return host.rstrip(".")


def blocked_host(host: str, domains: frozenset[str]) -> bool:
    """True when ``host`` or one of its parent domains is in ``domains``."""
    while host:
        if host in domains:
            return True
        _, _, host = host.partition(".")
    return False


class UrlFilter(ProcessingStage[DocumentBatch, DocumentBatch]):
    """Drop documents whose URL is on a domain blocklist or holds a banned substring."""

    name = "url_filter"
    batch_size = 1

    def __init__(self, blocklist: str | None = None, blocked_domains: Sequence[str] = (),
                 banned_substrings: Sequence[str] = (), url_field: str = "url",
                 name: str | None = None) -> None:
        if isinstance(blocked_domains, str) or isinstance(banned_substrings, str):
            raise TypeError("UrlFilter: blocked_domains and banned_substrings are lists of "
                            "strings, not one string; wrap it in a list")
        if blocklist is not None and "://" not in blocklist:
            blocklist = os.path.abspath(os.path.expanduser(blocklist))  # workers have other cwds
        self.blocklist = blocklist
        self.blocked_domains = tuple(sorted({_normalise_domain(d) for d in blocked_domains} - {""}))
        self.banned_substrings = tuple(sorted({s.lower() for s in banned_substrings if s}))
        self.url_field = url_field
        self.blocklist_sha256: str | None = None
        self._domains: frozenset[str] | None = None
        if blocklist is not None:
            try:
                raw = _read_blocklist(blocklist)
            except (OSError, ValueError) as exc:
                raise ValueError(f"stage 'url_filter': field 'blocklist': cannot read "
                                 f"{blocklist!r} ({exc}); give a readable file or URL with "
                                 "one domain per line") from exc
            if not parse_domains(raw.decode("utf-8", "replace")):
                raise ValueError(f"stage 'url_filter': field 'blocklist': {blocklist!r} holds no "
                                 "domain; give a file with one domain per line")
            self.blocklist_sha256 = hashlib.sha256(raw).hexdigest()
        if not (blocklist or self.blocked_domains or self.banned_substrings):
            raise ValueError("stage 'url_filter': nothing to filter by; give blocklist, "
                             "blocked_domains or banned_substrings")
        if name:
            self.name = name

    def inputs(self) -> tuple[list[str], list[str]]:
        return [], [self.url_field]

    def outputs(self) -> tuple[list[str], list[str]]:
        return [], [self.url_field]

    def setup(self, worker_metadata: dict[str, Any] | None = None) -> None:
        """Read the blocklist once per worker process."""
        self._load()

    def ray_stage_spec(self) -> dict[str, Any]:
        """Ray tasks, not an actor pool: the list is read once per worker process (the backend
        sets a task-mode stage up per process) and the stage fuses with its neighbours."""
        return {"is_actor_stage": False}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_domains"] = None  # per-process state: a large list is never pickled to workers
        return state

    def _load(self) -> frozenset[str]:
        if self._domains is None:
            domains = set(self.blocked_domains)
            if self.blocklist is not None:
                raw = _read_blocklist(self.blocklist)
                if hashlib.sha256(raw).hexdigest() != self.blocklist_sha256:
                    raise RuntimeError(
                        f"stage {self.stage_name!r}: field 'blocklist': {self.blocklist!r} "
                        "changed after the pipeline was built; rebuild it (re-run the flow)")
                domains |= parse_domains(raw.decode("utf-8", "replace"))
            self._domains = frozenset(domains)
        return self._domains

    def process(self, task: DocumentBatch) -> DocumentBatch:
        table = task.to_pyarrow()
        urls = table.column(self.url_field)
        if not (pa.types.is_string(urls.type) or pa.types.is_large_string(urls.type)
                or pa.types.is_null(urls.type)):
            raise TypeError(f"stage {self.stage_name!r}: field {self.url_field!r} must hold "
                            f"URL strings, got {urls.type}; set url_field to the URL column")
        urls = pc.fill_null(urls.cast(pa.string()), "")
        domain_hit = self._domain_hits(urls)
        substring_hit = np.zeros(len(domain_hit), dtype=bool)
        if self.banned_substrings:
            pattern = "|".join(re.escape(s) for s in self.banned_substrings)
            substring_hit = np.asarray(pc.match_substring_regex(urls, pattern, ignore_case=True),
                                       dtype=bool) & ~domain_hit
        keep = ~(domain_hit | substring_hit)
        out = task.derive(table.filter(pa.array(keep)))
        return record_drops(out, {URL_DOMAIN: int(domain_hit.sum()),
                                  URL_SUBSTRING: int(substring_hit.sum())})

    def _domain_hits(self, urls: pa.ChunkedArray) -> np.ndarray:
        """True per row whose host is blocked; each distinct URL of the batch is parsed once."""
        domains = self._load()
        if not domains or len(urls) == 0:
            return np.zeros(len(urls), dtype=bool)
        encoded = pc.dictionary_encode(urls).combine_chunks()
        verdicts = np.array([blocked_host(host_of(u), domains)
                             for u in encoded.dictionary.to_pylist()], dtype=bool)
        return verdicts[np.asarray(encoded.indices, dtype=np.int64)]
