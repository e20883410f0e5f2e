"""What every executor's ``execute()`` returns, and the protocol the executors meet.

:class:`LocalExecutor`, :class:`MultiprocessExecutor` and :class:`RayDataExecutor` run the same
stages in different places; a caller swaps one for another and reads the same result. The
result is a ``list`` of the tasks the last stage emitted, so code that iterates, indexes or
``len()``s the return value keeps working; ``.summary`` adds the run's counts (documents read,
written, dropped by reason, quarantined) read from the tasks' public ``stage_history``, so a
library user never reaches into a task's internals for them. The counting is the flows' own
(:mod:`curator_stages.accounting`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Protocol, runtime_checkable

from curator_stages.accounting import HistoryAggregator, summarise
from curator_stages.tasks import DOCUMENTS_WRITTEN, Task

if TYPE_CHECKING:  # pragma: no cover
    from curator_stages.pipeline import Pipeline


@dataclass(frozen=True)
class ExecutionSummary:
    """The counts of one ``execute()``; ``balanced`` is the accounting identity.

    ``documents_out`` is what the writers wrote (``documents_written``) or, in a pipeline
    without a writer, the documents in the final output (``out_source`` says which).
    ``documents_skipped`` are records a reader set aside as not documents (a WARC request).
    """

    documents_read: int
    documents_out: int
    documents_quarantined: int
    dropped_by_reason: dict[str, int] = field(default_factory=dict)
    dropped_by_stage: dict[str, int] = field(default_factory=dict)
    output_tasks: int = 0
    out_source: str = DOCUMENTS_WRITTEN
    documents_skipped: int = 0

    @property
    def documents_dropped(self) -> int:
        return sum(self.dropped_by_reason.values())

    @property
    def balanced(self) -> bool:
        """read = out + dropped + quarantined + skipped (true for a pipeline that reads its
        documents)."""
        return self.documents_read == (self.documents_out + self.documents_dropped
                                       + self.documents_quarantined + self.documents_skipped)

    def to_dict(self) -> dict[str, Any]:
        return {
            "documents_read": self.documents_read,
            "documents_out": self.documents_out,
            "documents_dropped": self.documents_dropped,
            "documents_quarantined": self.documents_quarantined,
            "documents_skipped": self.documents_skipped,
            "dropped_by_reason": dict(self.dropped_by_reason),
            "dropped_by_stage": dict(self.dropped_by_stage),
            "output_tasks": self.output_tasks,
            "out_source": self.out_source,
            "balanced": self.balanced,
        }

    def to_text(self) -> str:
        """A few lines for a console: the identity, then the drops, largest first."""
        sign = "=" if self.balanced else "!="
        skipped = f" + skipped {self.documents_skipped}" if self.documents_skipped else ""
        lines = [f"read {self.documents_read} {sign} out {self.documents_out} + dropped "
                 f"{self.documents_dropped} + quarantined {self.documents_quarantined}{skipped}"]
        for reason, n in sorted(self.dropped_by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  dropped {n:>7}  {reason}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    @classmethod
    def from_tasks(cls, tasks: Iterable[Any]) -> "ExecutionSummary":
        """The counts of ``tasks``' stage histories, by the rules a flow's run summary uses
        (:func:`curator_stages.accounting.summarise`): the accounting is written once."""
        tasks = list(tasks)
        documents = [t for t in tasks if isinstance(t, Task)]
        history = HistoryAggregator().add_tasks(documents)
        run = summarise(history.stages, final_documents=history.num_items)
        by_stage = {s.stage: s.dropped_total for s in run.stages if s.dropped_total}
        return cls(run.documents_read, run.documents_written, run.documents_quarantined,
                   run.dropped_by_reason, by_stage, len(tasks),
                   out_source=run.written_source, documents_skipped=run.documents_skipped)


class ExecutionResult(list):
    """The output tasks of ``execute()`` (a list, as before) with a :class:`ExecutionSummary`."""

    def __init__(self, tasks: Iterable[Any] = ()) -> None:
        super().__init__(tasks)
        #: The counts of the run; ``print(result.summary)`` for the console lines.
        self.summary = ExecutionSummary.from_tasks(self)

    @property
    def tasks(self) -> list[Any]:
        """The output tasks as a plain list."""
        return list(self)


@runtime_checkable
class Executor(Protocol):
    """Runs stages and returns the tasks the last stage emits, with their summary.

    Composite stages are decomposed and global stages fitted by the executor; with no
    ``initial_tasks`` the run starts from one :class:`~curator_stages.tasks.EmptyTask`.
    """

    def execute(self, stages: "Pipeline | Iterable[Any]",
                initial_tasks: Iterable[Task] | None = None) -> ExecutionResult:
        ...  # pragma: no cover - a protocol
