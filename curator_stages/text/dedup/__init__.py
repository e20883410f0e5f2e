"""Dataset-wide deduplication stages (GlobalStage: fit over all tasks, then a per-task filter).

- :class:`ExactDuplicateRemover` - equal normalised text; drops recorded as ``exact_duplicate``.
- :class:`FuzzyDuplicateRemover` - MinHash + LSH + components; drops as ``fuzzy_duplicate``.
Both keep the document with the smallest id of each duplicate group, and name documents by a
row key that is unique by construction (id + source location; see :mod:`.rows`), so records that
share an id are never removed together. Records whose id an earlier record has go to quarantine.
- :class:`DuplicateIdCheck` - that duplicate-id check alone, for pipelines without dedup.
"""

from curator_stages.text.dedup.exact import EXACT_DUPLICATE, ExactDuplicateRemover, normalize_for_exact
from curator_stages.text.dedup.fuzzy import FUZZY_DUPLICATE, FuzzyDedupResult, FuzzyDuplicateRemover
from curator_stages.text.dedup.idcheck import DUPLICATE_ID, DuplicateIdCheck
from curator_stages.text.dedup.idset import DuplicateIdFilter, IdSet
from curator_stages.text.dedup.lsh import optimal_bands

__all__ = [
    "DUPLICATE_ID", "EXACT_DUPLICATE", "FUZZY_DUPLICATE", "DuplicateIdCheck", "DuplicateIdFilter", "ExactDuplicateRemover",
    "FuzzyDedupResult", "FuzzyDuplicateRemover", "IdSet", "normalize_for_exact", "optimal_bands",
]
