"""Deterministic synthetic text corpora with known answers (junk kinds, duplicate clusters)."""

from curator_stages.corpus.generator import (
    GROUND_TRUTH_FILE,
    JUNK_KINDS,
    KINDS,
    MALFORMED_LINES,
    MANIFEST_FILE,
    CorpusConfig,
    duplicate_clusters,
    generate_corpus,
    load_ground_truth,
)

__all__ = [
    "CorpusConfig",
    "GROUND_TRUTH_FILE",
    "JUNK_KINDS",
    "KINDS",
    "MALFORMED_LINES",
    "MANIFEST_FILE",
    "duplicate_clusters",
    "generate_corpus",
    "load_ground_truth",
]
