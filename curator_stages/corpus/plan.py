"""What a synthetic corpus holds: its configuration and the per-document plan drawn from the seed.

Why apart from the text and the files: the plan (kind, language, length, copy source of every
document) is drawn once from the seed with vectorised numpy, so every shard worker, and a
benchmark that wants one document's text, computes the same plan independently of the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curator_stages.corpus.vocabulary import LANGUAGE_WEIGHTS
from curator_stages.io.compression import extension_for, infer_codec

#: Document kinds. ``clean`` is prose worth keeping; ``junk_*`` is what heuristic filters should
#: drop; ``exact_dup``/``near_dup`` are planted copies of an earlier clean document.
KINDS = ("clean", "junk_boilerplate", "junk_lorem", "junk_symbols", "junk_numbers",
         "junk_bullets", "junk_short", "junk_repeated_lines", "junk_urls", "exact_dup", "near_dup")
JUNK_KINDS = tuple(k for k in KINDS if k.startswith("junk_"))
LANGS = tuple(LANGUAGE_WEIGHTS)


@dataclass
class CorpusConfig:
    """What to generate. Fractions are of ``num_docs``; the rest is clean prose."""

    num_docs: int = 10_000
    shards: int = 4
    seed: int = 0
    malformed: bool = False
    #: None, "gzip", "zstd", or one per shard (cycled), e.g. [None, None, "gzip", "zstd"].
    compression: str | None | list[str | None] = None
    junk_fraction: float = 0.15
    exact_dup_fraction: float = 0.04
    near_dup_fraction: float = 0.04
    #: Probability that a word of a near duplicate is edited (substituted, deleted or followed
    #: by an inserted word). The realised rate of each copy is in the ground truth.
    near_dup_edit_rate: float = 0.05
    #: Median words of a prose document; lengths are log-normal, clipped to [min_words, max_words].
    median_words: int = 150
    min_words: int = 12
    max_words: int = 5000
    workers: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def codec_for(self, shard: int) -> str | None:
        comp = self.compression
        if isinstance(comp, (list, tuple)):
            comp = comp[shard % len(comp)] if comp else None
        return infer_codec("", comp) if comp not in (None, "none", "infer") else None

    def shard_file(self, shard: int) -> str:
        return f"shard-{shard:05d}.jsonl{extension_for(self.codec_for(shard))}"


@dataclass
class Plan:
    kind: np.ndarray  # int index into KINDS
    lang: np.ndarray  # int index into LANGS
    n_words: np.ndarray
    source: np.ndarray  # copy source index, -1 when not a copy
    has_copies: np.ndarray  # bool


def make_plan(cfg: CorpusConfig) -> Plan:
    """The kind, language, length and copy source of every document (vectorised, seed-only)."""
    n = cfg.num_docs
    rng = np.random.default_rng([cfg.seed, 0x5EED])
    junk_each = cfg.junk_fraction / len(JUNK_KINDS)
    clean_p = 1.0 - cfg.junk_fraction - cfg.exact_dup_fraction - cfg.near_dup_fraction
    if clean_p <= 0:
        raise ValueError("junk_fraction + exact_dup_fraction + near_dup_fraction must be < 1")
    probs = np.array([clean_p] + [junk_each] * len(JUNK_KINDS)
                     + [cfg.exact_dup_fraction, cfg.near_dup_fraction])
    kind = rng.choice(len(KINDS), size=n, p=probs / probs.sum())
    lang = rng.choice(len(LANGS), size=n, p=np.array(list(LANGUAGE_WEIGHTS.values())))
    n_words = np.clip(np.round(rng.lognormal(np.log(cfg.median_words), 0.9, size=n)),
                      cfg.min_words, cfg.max_words).astype(np.int64)
    clean = KINDS.index("clean")
    copy_kinds = np.isin(kind, [KINDS.index("exact_dup"), KINDS.index("near_dup")])
    eligible = np.flatnonzero((kind == clean) & (n_words >= 30))
    source = np.full(n, -1, dtype=np.int64)
    copies = np.flatnonzero(copy_kinds)
    available = np.searchsorted(eligible, copies)  # eligible originals before each copy
    pick = np.floor(rng.random(len(copies)) * np.maximum(available, 1)).astype(np.int64)
    ok = available > 0
    source[copies[ok]] = eligible[pick[ok]]
    kind[copies[~ok]] = clean  # no earlier original to copy: becomes an ordinary document
    has_copies = np.zeros(n, dtype=bool)
    has_copies[source[source >= 0]] = True
    lang[copies[ok]] = lang[source[copies[ok]]]
    n_words[copies[ok]] = n_words[source[copies[ok]]]
    return Plan(kind, lang, n_words, source, has_copies)
