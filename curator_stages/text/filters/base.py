"""The rule contract shared by every document-level quality rule, and where rules are named.

A rule is a frozen dataclass whose fields are its thresholds, so a stage's identity (which reads
public attributes, recursively) changes whenever a threshold does. A rule has

- ``name``: the score column and the drop reason (``dropped.<name>`` in stage metrics);
- ``score(features) -> float64 array``: one number per document, computed on the whole batch;
- ``keep(scores) -> bool array``: True where the document passes.

Every rule is total: empty, blank, huge or odd text gets a finite score, never an exception
(ratios with a zero denominator are 0.0). Rules are Unicode-aware: a letter is ``\\p{L}`` (any
script), a digit ``\\p{N}``, and combining marks ``\\p{M}`` count with letters.

Rules are language-aware where the language matters: a rule may **abstain** on a document it
cannot judge (see :meth:`Rule.abstains`); the document passes that rule and its score column still
shows the raw score. Abstaining is explicit, never a silent drop. Which rules abstain where is
said by the rules themselves (``gopher``, ``c4``, ``repetition``).

This module is apart from the rules so that every rule family can import the base without
importing the others; :mod:`curator_stages.text.filters.rules` gathers them under one import path.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal

import numpy as np

from curator_stages.text.filters.features import TextFeatures


class Rule(ABC):
    """A named, thresholded, batched document score (see module docstring)."""

    #: How expensive :meth:`score` is. ``"cheap"``: reads the shared per-batch features (word
    #: split, lines, regex counts), roughly one pass over the text. ``"costly"``: builds much
    #: more (duplicate lines/paragraphs, n-gram hashes); in filter mode
    #: :class:`HeuristicFilter` scores a costly rule only on documents no earlier rule failed.
    #: A class attribute, not a field: it changes no score, so it is not part of identity.
    cost: ClassVar[Literal["cheap", "costly"]] = "cheap"

    @property
    @abstractmethod
    def name(self) -> str:
        """Score column suffix and drop reason."""

    @abstractmethod
    def score(self, features: TextFeatures) -> np.ndarray:
        """One float per document of the batch."""

    @abstractmethod
    def keep(self, scores: np.ndarray) -> np.ndarray:
        """True where a document with that score passes."""

    def abstains(self, features: TextFeatures) -> np.ndarray | None:
        """True where this rule cannot judge the document (its language or script is outside the
        rule's meaning): the document then passes this rule whatever its score. ``None`` (the
        default): the rule judges every document. :class:`HeuristicFilter` applies this; code
        calling ``keep`` directly should too."""
        return None
