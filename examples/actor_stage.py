"""A class stage with ``setup``: the backend runs it as a pool of Ray actors (docs/writing_stages.md).

``setup`` runs once per worker, so whatever it loads (here a small keyword "model"; in real use
a tokenizer or a fastText model) is loaded once per actor and reused for every batch, instead of
once per call. Run it: ``python examples/actor_stage.py``.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from curator_stages import DocumentBatch, Pipeline, ProcessingStage, Resources
from curator_stages.backends.ray_data import RayDataExecutor


class TopicTagger(ProcessingStage[DocumentBatch, DocumentBatch]):
    """Tag each document with the topic whose keywords it mentions most.

    ``topics`` is a public attribute, so it is a parameter: part of the stage's identity, and a
    change to it invalidates cached outputs. ``_index`` is built in ``setup`` and starts with an
    underscore, so it is worker state, not a parameter.
    """

    name = "topic_tagger"
    resources = Resources(cpus=1)
    batch_size = 4  # tasks (not documents) per call

    def __init__(self, topics: dict[str, list[str]] | None = None) -> None:
        self.topics = topics or {
            "sport": ["match", "goal", "team", "season"],
            "science": ["cell", "energy", "experiment", "theory"],
        }
        self._index: dict[str, str] | None = None

    def setup(self, worker_metadata: dict[str, Any] | None = None) -> None:
        # The expensive load goes here: it runs once in each actor.
        self._index = {word: topic for topic, words in self.topics.items() for word in words}

    def inputs(self) -> tuple[list[str], list[str]]:
        return [], ["text"]

    def outputs(self) -> tuple[list[str], list[str]]:
        return [], ["topic"]

    def process(self, task: DocumentBatch) -> DocumentBatch:
        assert self._index is not None, "setup() runs before process() on every worker"
        table = task.to_pyarrow()
        topics = []
        for text in table["text"].to_pylist():
            votes: dict[str, int] = {}
            for word in (text or "").lower().split():
                topic = self._index.get(word.strip(".,;:!?"))
                if topic:
                    votes[topic] = votes.get(topic, 0) + 1
            topics.append(max(sorted(votes), key=votes.get) if votes else "other")
        return task.derive(table.append_column("topic", pa.array(topics, pa.string())))


def sample_batches() -> list[DocumentBatch]:
    texts = [
        "The team scored a late goal to win the match.",
        "The experiment measured the energy stored in each cell.",
        "A quiet afternoon with nothing much to report.",
    ]
    table = pa.table({"id": [f"doc-{i}" for i in range(3)], "text": texts})
    return [DocumentBatch(task_id="batch-0", dataset_name="example", data=table)]


def main() -> list[DocumentBatch]:
    pipeline = Pipeline("actor_stage_example", [TopicTagger()])
    plan = pipeline.plan()
    print(plan.to_text())  # TopicTagger overrides setup -> mode "actor"
    results = RayDataExecutor().execute(pipeline, sample_batches())
    for task in results:
        print(task.to_pandas()[["id", "topic"]])
    return results


if __name__ == "__main__":
    main()
