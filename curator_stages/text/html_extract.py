"""HTML -> text: trafilatura (default) or resiliparse, with a time and memory limit per page.

The text of a page is exactly what the library returns for the page's HTML with the stage's
options (``trafilatura.extract(html, **options)``, or resiliparse's
``extract_plain_text(HTMLTree.parse(html), **options)``): the stage adds no cleaning of its
own, so results compare one to one with the library's.

Default trafilatura options are those of FineWeb's extraction (``favor_precision=True``,
``include_comments=False``) with ``deduplicate=False``: trafilatura's deduplication keeps a
cache across calls, which makes a page's text depend on the pages one worker extracted before
it, so a rerun or another split could give other text.

Each page is extracted in a child process (:mod:`curator_stages.text.extract_worker`) that the
stage starts once per worker. A page that runs over ``timeout_s`` (the child is killed and
restarted), raises, or exceeds ``memory_limit_mb`` of address space is **quarantined** with its
URL, file, offset and reason; the other pages of the batch go on. A page whose extraction is
empty or blank is **dropped** with reason ``no_text``.

Output: the ``text`` column (the ``html`` column is removed unless ``keep_html=True``).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from curator_stages.io.quarantine import (
    DEFAULT_RAW_CAP,
    QUARANTINE_FILES_KEY,
    QUARANTINE_KEY,
    write_quarantine,
)
from curator_stages.io.partition import FILE_GROUP_KEY
from curator_stages.resources import Resources
from curator_stages.stage import ProcessingStage, record_drops, record_metrics
from curator_stages.tasks import DOCUMENTS_QUARANTINED, DocumentBatch

NO_TEXT = "no_text"
EXTRACTORS = ("trafilatura", "resiliparse")
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "trafilatura": {"favor_precision": True, "include_comments": False, "deduplicate": False},
    "resiliparse": {"main_content": True, "alt_texts": False},
}
#: Seconds a new child may take to import its extractor (slow on a loaded machine).
STARTUP_TIMEOUT_S = 180.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def _signature(extractor: str) -> inspect.Signature | None:
    if extractor == "trafilatura":
        from trafilatura import extract

        return inspect.signature(extract)
    from resiliparse.extract.html2text import extract_plain_text

    try:
        return inspect.signature(extract_plain_text)
    except ValueError:  # a compiled function may not expose one
        return None


class ExtractorProcess:
    """One child process running an extractor; restarted after a timeout or a crash."""

    def __init__(self, extractor: str, options: dict[str, Any], memory_limit_mb: int | None,
                 stage_name: str) -> None:
        self.extractor, self.options, self.stage_name = extractor, options, stage_name
        self.memory_limit = memory_limit_mb << 20 if memory_limit_mb else 0
        self._proc: subprocess.Popen | None = None
        self._send: Connection | None = None
        self._recv: Connection | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "curator_stages.text.extract_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._send = Connection(os.dup(self._proc.stdin.fileno()), readable=False)
        self._recv = Connection(os.dup(self._proc.stdout.fileno()), writable=False)
        self._proc.stdin.close()
        self._proc.stdout.close()
        self._send.send((self.extractor, self.options, self.memory_limit))
        if not self._recv.poll(STARTUP_TIMEOUT_S):
            self.close()
            raise RuntimeError(f"stage {self.stage_name!r}: the {self.extractor} process did not "
                               f"start within {STARTUP_TIMEOUT_S:.0f} s; check that "
                               f"{self.extractor} imports in this environment")
        try:
            self._recv.recv()
        except EOFError:
            code = self.close()
            raise RuntimeError(f"stage {self.stage_name!r}: the {self.extractor} process exited "
                               f"at start (code {code}); see its error above, and check that "
                               f"{self.extractor} is installed (pip install {self.extractor})")

    def extract(self, html: str, timeout_s: float) -> tuple[str, Any]:
        """("ok", text or None) or ("error", reason) for one page; never raises for the page."""
        if self._proc is None or self._proc.poll() is not None:
            self.close()  # gone between pages (its parent thread ended): not this page's fault
            self.start()
        assert self._send is not None and self._recv is not None
        try:
            self._send.send(html)
            if not self._recv.poll(timeout_s):
                self.close()
                return "error", f"extraction timed out after {timeout_s:g} s (timeout_s)"
            return self._recv.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            code = self.close()
            return "error", f"the extractor process died on this page (exit code {code})"

    def close(self) -> int | None:
        """Stop the child (kill: it may be stuck in C code); returns its exit code."""
        for conn in (self._send, self._recv):
            if conn is not None:
                conn.close()
        self._send = self._recv = None
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        return proc.wait()


class HtmlExtractor(ProcessingStage[DocumentBatch, DocumentBatch]):
    """Extract the main text of each page (see the module docstring).

    ``extractor``: "trafilatura" (default) or "resiliparse" (several times faster, a little
    less precise); ``options``: keyword arguments of the library's call (default:
    :data:`DEFAULT_OPTIONS`); ``timeout_s``: seconds one page may take; ``memory_limit_mb``:
    address space of the extracting process (None: no limit); ``html_field`` / ``text_field``
    / ``url_field``: columns; ``keep_html``: keep the HTML column.
    """

    name = "html_extract"
    resources = Resources(cpus=1.0)

    def __init__(self, extractor: Literal["trafilatura", "resiliparse"] = "trafilatura",
                 options: dict[str, Any] | None = None, timeout_s: float = 10.0,
                 memory_limit_mb: int | None = 2048, html_field: str = "html",
                 text_field: str = "text", url_field: str = "url", keep_html: bool = False,
                 max_quarantine_raw_bytes: int = DEFAULT_RAW_CAP, name: str | None = None) -> None:
        label = name or self.name
        if extractor not in EXTRACTORS:
            raise ValueError(f"stage {label!r}: extractor must be one of {EXTRACTORS}, "
                             f"got {extractor!r}")
        if importlib.util.find_spec(extractor) is None:
            raise ValueError(f"stage {label!r}: extractor {extractor!r} is not installed; "
                             f"pip install {extractor}, or choose the other extractor")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) \
                or not 0 < timeout_s <= 3600:
            raise ValueError(f"stage {label!r}: timeout_s must be a number of seconds in "
                             f"(0, 3600], got {timeout_s!r}")
        if memory_limit_mb is not None and (isinstance(memory_limit_mb, bool) or not isinstance(
                memory_limit_mb, int) or memory_limit_mb < 256):
            raise ValueError(f"stage {label!r}: memory_limit_mb must be None or an integer >= "
                             f"256, got {memory_limit_mb!r}")
        opts = dict(DEFAULT_OPTIONS[extractor] if options is None else options)
        sig = _signature(extractor)
        if sig is not None:
            unknown = sorted(set(opts) - set(list(sig.parameters)[1:]))
            if unknown:
                raise ValueError(f"stage {label!r}: options {unknown} are not parameters of "
                                 f"{extractor}'s extraction; known: {list(sig.parameters)[1:]}")
        self.extractor = extractor
        self.options = opts
        self.timeout_s = float(timeout_s)
        self.memory_limit_mb = memory_limit_mb
        self.html_field, self.text_field, self.url_field = html_field, text_field, url_field
        self.keep_html = keep_html
        self.max_quarantine_raw_bytes = max_quarantine_raw_bytes
        if name:
            self.name = name
        self._process: ExtractorProcess | None = None

    def ray_stage_spec(self) -> dict[str, Any]:
        """Ray tasks: the child process is started once per worker process (as the language
        stage loads its model) and reused by every batch that worker runs."""
        return {"is_actor_stage": False}

    def setup(self, worker_metadata: dict[str, Any] | None = None) -> None:
        if self._process is None:
            self._process = ExtractorProcess(self.extractor, self.options, self.memory_limit_mb,
                                             self.stage_name)
            self._process.start()

    def teardown(self) -> None:
        if self._process is not None:
            self._process.close()
            self._process = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_process"] = None  # a child process belongs to the worker that started it
        return state

    def inputs(self) -> tuple[list[str], list[str]]:
        return ["data"], [self.html_field]

    def outputs(self) -> tuple[list[str], list[str]]:
        return ["data"], [self.text_field]

    def extract(self, html: str | None) -> tuple[str, Any]:
        """("ok", text or None) or ("error", reason) for one page, as the stage gets it."""
        if not html:
            return "ok", None
        self.setup()
        assert self._process is not None
        return self._process.extract(html, self.timeout_s)

    def process(self, task: DocumentBatch) -> DocumentBatch:
        table = task.to_pyarrow()
        htmls = table.column(self.html_field).to_pylist()
        texts: list[str | None] = []
        keep: list[bool] = []
        records: list[dict[str, Any]] = []
        no_text = 0
        for i, html in enumerate(htmls):
            status, value = self.extract(html)
            if status == "ok" and value and value.strip():
                texts.append(value)
                keep.append(True)
                continue
            keep.append(False)
            if status == "ok":
                no_text += 1
            else:
                records.append(self._record(table, i, html or "", value))
        if self.text_field in table.column_names:
            table = table.drop_columns([self.text_field])
        table = table.filter(pa.array(keep, pa.bool_()))
        table = table.append_column(self.text_field, pa.array(texts, pa.string()))
        if not self.keep_html:
            table = table.drop_columns([self.html_field])
        out = task.derive(table, **(self._quarantine_meta(task, records) if records else {}))
        if records:
            record_metrics(out, **{DOCUMENTS_QUARANTINED: len(records)})
        return record_drops(out, {NO_TEXT: no_text})

    def _record(self, table: pa.Table, row: int, html: str, reason: str) -> dict[str, Any]:
        def cell(name: str) -> Any:
            return table.column(name)[row].as_py() if name in table.column_names else None

        raw = html.encode("utf-8", "surrogatepass")
        return {"file": cell("source_file") or "", "offset": cell("source_offset"),
                "id": cell("id"), "url": cell(self.url_field), "reason": reason,
                "raw": raw[:self.max_quarantine_raw_bytes].decode("utf-8", "backslashreplace"),
                "raw_size": len(raw), "stage": self.stage_name}

    def _quarantine_meta(self, task: DocumentBatch, records: list[dict]) -> dict[str, Any]:
        """Beside the reader's quarantine file when it wrote one, else with the task for the
        writer's ``quarantine_output``."""
        written = task.metadata.get(QUARANTINE_FILES_KEY) or []
        if not written:
            return {QUARANTINE_KEY: [*task.metadata.get(QUARANTINE_KEY, []), *records]}
        key = f"{task.metadata.get(FILE_GROUP_KEY) or task.task_id}-{self.stage_name}"
        path = write_quarantine(os.path.dirname(written[0]) if "://" not in written[0]
                                else written[0].rsplit("/", 1)[0], key, records,
                                stage_name=self.stage_name)
        return {QUARANTINE_FILES_KEY: [*written, path]}


__all__ = ["DEFAULT_OPTIONS", "EXTRACTORS", "ExtractorProcess", "HtmlExtractor", "NO_TEXT"]
