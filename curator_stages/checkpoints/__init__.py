"""Checkpoints: each stage task's output stored as plain task files plus a manifest written last.

Checkpoints are read and written inside Ray workers, so this package imports neither Prefect
nor the flows (a test holds it to that): a worker that loads a checkpoint pays for pyarrow and
fsspec, not for an orchestrator. :class:`DatasetRef` is what Prefect tasks hand each other;
:mod:`.store` writes checkpoints, :mod:`.loading` reads them and :mod:`.cleanup` removes
crashed attempts' leftovers; :mod:`.task_files` is the one format of a task on disk.
"""

from curator_stages.checkpoints.cleanup import remove_stale_temporaries
from curator_stages.checkpoints.dataset_ref import DatasetRef
from curator_stages.checkpoints.loading import *  # noqa: F401,F403
from curator_stages.checkpoints.loading import __all__ as _loading_all
from curator_stages.checkpoints.store import *  # noqa: F401,F403
from curator_stages.checkpoints.store import __all__ as _store_all

__all__ = ["DatasetRef", "remove_stale_temporaries", *_store_all, *_loading_all]
