"""Ray Data settings for one plan, restored when the plan ends.

Why a context manager: ``DataContext.get_current()`` is process-wide, and a library user's own
Ray Data code in the same process must not inherit our choices. Ray Data copies the current
context into a dataset when the dataset is *created*, so the settings apply to every dataset
created inside the block (create the source dataset inside it), and restoring them afterwards
does not change a plan already built.

What is set, and why:

- ``enable_fallback_to_arrow_object_ext_type = True``: tasks travel as pickled Python objects by
  design. Left unset, Ray Data first tries to turn the ``"item"`` column into native Arrow,
  fails, and logs "Failed to convert column 'item' into pyarrow array" once per process.
- ``op_resource_reservation_enabled = False`` (unless asked for): Ray Data's per-operator
  reservation splits a small budget (2 CPUs) between the fan-out and the main map, so the main
  map ran 1 task while the other CPU idled. 200k docs, 2 CPUs: steady 51.7-51.9 s off vs
  59.3-61.2 s on (3 runs each), 3-7 tasks in flight instead of 1-2.
- ``enable_progress_bars``: as asked. Off, Ray Data logs a one-time hint on how to turn the
  bars back on; that one record is dropped (:class:`~curator_stages.runtime.ray_cluster.
  DropMessages`), since the choice was ours.
- ``quiet``: no bars, no plan banner, and Ray Data's INFO lines off (logs under Prefect).
- Ray Data's momentary "no available CPUs" warning is dropped inside the block (see
  :data:`_NO_CPU_WARNING` for why it is false there).

Not silenced, because it cannot be from Python: the driver's C++ core worker logs
``E ... core_worker.cc ... has constructor arguments in the object store and max_restarts > 0``
once per actor pool. Ray Data 2.60 itself passes its actors' constructor arguments as object
references and turns restarts on (ray-project/ray#57733, open); the only off switch,
``max_restarts=0``, would give up restarting a stage actor whose process dies.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import TYPE_CHECKING, Iterator

from curator_stages.runtime.ray_cluster import DropMessages

if TYPE_CHECKING:  # pragma: no cover
    from ray.data import DataContext

#: The logger of Ray Data's progress-manager choice, and the start of the one hint it logs when
#: bars are off. A logger name, not an API: tests/test_library_output.py fails if the hint
#: comes back, and tests/test_ray_private_guards.py if the logger or message is renamed.
_PROGRESS_LOGGER = "ray.data._internal.progress"
_PROGRESS_HINTS = ("Progress bars disabled.", "Progress bars for operators disabled.")


#: Ray Data's "no available CPUs: the Dataset job will hang" warning. Ray Data 2.60 logs it from
#: a snapshot of free CPUs taken when any dataset call starts, before it looks whether anything
#: has to run: a global stage's fit calls ``count()``/``to_arrow_refs()`` on a dataset it has
#: just materialised (nothing runs), milliseconds after that plan's own workers were still
#: returning their CPUs. Inside our plans the warning is therefore about our own finishing
#: workers; the hang it is meant for (a request no node can ever host) is refused before the
#: plan starts (:mod:`curator_stages.plan.stage_plan`).
_DATASET_LOGGER = "ray.data.dataset"
_NO_CPU_WARNING = ("Warning: The Ray cluster currently does not have any available CPUs.",)


def default_progress_bars() -> bool:
    """Ray Data's bars on a terminal; none when stdout or stderr is not one.

    Off a terminal Ray Data falls back to a multi-line progress dump every 10 s on the console,
    which buries a library user's own output (and is not a bar); the bars themselves are drawn
    on stderr, so a redirected stderr (``2> log``, a CI log) would get their raw escape codes.
    """
    try:
        return sys.stdout.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


@contextlib.contextmanager
def data_context_for_plan(progress_bars: bool | None = None,
                          op_resource_reservation: bool = False,
                          quiet: bool = False) -> Iterator["DataContext"]:
    """Set this package's Ray Data settings for the plans built inside; restore them after.

    ``progress_bars``: ``None`` leaves Ray Data's setting alone. ``quiet`` turns bars, the plan
    banner and Ray Data's INFO logging off. Yields the (process-wide) current context.
    """
    from ray.data import DataContext

    ctx = DataContext.get_current()
    changes: dict[str, object] = {"enable_fallback_to_arrow_object_ext_type": True}
    if not op_resource_reservation:
        changes["op_resource_reservation_enabled"] = False
    if progress_bars is not None:
        changes["enable_progress_bars"] = progress_bars
    if quiet:
        changes["enable_progress_bars"] = False
        changes["print_on_execution_start"] = False
    saved = {name: getattr(ctx, name) for name in changes if hasattr(ctx, name)}
    for name in saved:
        setattr(ctx, name, changes[name])
    data_logger = logging.getLogger("ray.data")
    saved_level = data_logger.level
    if quiet:
        data_logger.setLevel(logging.WARNING)
    filters = [(logging.getLogger(_PROGRESS_LOGGER), DropMessages(_PROGRESS_HINTS)),
               (logging.getLogger(_DATASET_LOGGER), DropMessages(_NO_CPU_WARNING))]
    for target, record_filter in filters:
        target.addFilter(record_filter)
    try:
        yield ctx
    finally:
        for target, record_filter in filters:
            target.removeFilter(record_filter)
        data_logger.setLevel(saved_level)
        for name, value in saved.items():
            setattr(ctx, name, value)
