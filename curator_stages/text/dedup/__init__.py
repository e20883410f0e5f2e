"""Dataset-wide deduplication stages (GlobalStage: fit over all tasks, then a per-task filter).

- :class:`ExactDuplicateRemover` - equal normalised text; drops recorded as ``exact_duplicate``.
- :class:`FuzzyDuplicateRemover` - MinHash + LSH + components; drops as ``fuzzy_duplicate``.
Both keep the document with the smallest id of each duplicate group.
"""

from curator_stages.text.dedup.exact import EXACT_DUPLICATE, ExactDuplicateRemover, normalize_for_exact
from curator_stages.text.dedup.fuzzy import FUZZY_DUPLICATE, FuzzyDedupResult, FuzzyDuplicateRemover
from curator_stages.text.dedup.idset import DuplicateIdFilter, IdSet
from curator_stages.text.dedup.lsh import optimal_bands

__all__ = [
    "EXACT_DUPLICATE", "FUZZY_DUPLICATE", "DuplicateIdFilter", "ExactDuplicateRemover",
    "FuzzyDedupResult", "FuzzyDuplicateRemover", "IdSet", "normalize_for_exact", "optimal_bands",
]
