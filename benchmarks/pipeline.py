"""The reference pipeline every variant runs: read -> normalise -> heuristic filters ->
exact dedup -> write, built from the library's own stages (the very same objects everywhere)."""

from __future__ import annotations

from typing import Any

#: The flow's default: a few dropped documents per rule and batch are written as examples.
DROPPED_EXAMPLES_PER_RULE = 3


def reference_stages(input_path: str, output_path: str,
                     files_per_group: int | None = None) -> list[Any]:
    """The execution stages of ``flows/text_curation.py`` with ``language_id=False`` and
    ``fuzzy_dedup=False`` (same classes, parameters and names, so the same identities; the
    harness checks this before it measures), built without importing Prefect so that the
    Prefect-free variants do not pay its import.
    """
    from curator_stages.io import JsonlReader, ParquetWriter
    from curator_stages.text import HeuristicFilter, TextNormalizer
    from curator_stages.text.dedup import ExactDuplicateRemover
    from curator_stages.text.filters import default_quality_rules

    out = output_path.rstrip("/")
    reader = JsonlReader(input_path, text_field="text", files_per_group=files_per_group)
    return [
        *reader.decompose(),
        TextNormalizer(text_field="text"),
        HeuristicFilter(default_quality_rules(), text_field="text", name="quality_filter",
                        keep_dropped=DROPPED_EXAMPLES_PER_RULE),
        ExactDuplicateRemover(text_field="text", name="exact_dedup"),
        ParquetWriter(f"{out}/data", mode="overwrite", quarantine_output=f"{out}/quarantine",
                      dropped_output=f"{out}/dropped"),
    ]


def flow_params(input_path: str, output_path: str, work_dir: str, fused: bool,
                files_per_group: int | None = None,
                num_cpus: int | None = None) -> dict[str, Any]:
    """Parameters of ``flows/text_curation.py`` for the same pipeline."""
    return {"input": input_path, "output": output_path, "work_dir": work_dir,
            "language_id": False, "fuzzy_dedup": False, "exact_dedup": True,
            "fuse_cheap_stages": fused, "refresh": True, "files_per_group": files_per_group,
            "num_cpus": num_cpus, "retries": 0, "write_dropped": False,
            "dropped_examples_per_rule": DROPPED_EXAMPLES_PER_RULE}


def check_same_stages(input_path: str, output_path: str, work_dir: str) -> None:
    """Fail unless :func:`reference_stages` equals the flow's stages (by identity hash)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from flows.text_curation import TextCurationParams, build_stage_groups

    params = TextCurationParams(**flow_params(input_path, output_path, work_dir, fused=True))
    flow_stages = [s for g in build_stage_groups(params) for s in g]
    ours = reference_stages(params.input, params.output, params.files_per_group)
    a = [(s.stage_name, s.identity_hash()) for s in flow_stages]
    b = [(s.stage_name, s.identity_hash()) for s in ours]
    if a != b:
        raise AssertionError(f"benchmark stages differ from flows/text_curation.py: {a} != {b}")


def accounting(tasks: list[Any]) -> dict[str, Any]:
    """read / written / dropped by reason / quarantined from the tasks' stage history.

    Each StagePerfStats record is counted once (fan-out children share their parent's records).
    """
    from curator_stages.tasks import (
        DOCUMENTS_QUARANTINED,
        DOCUMENTS_READ,
        DOCUMENTS_WRITTEN,
        DROPPED_PREFIX,
    )

    seen: set[str] = set()
    read = written = quarantined = 0
    dropped: dict[str, int] = {}
    for task in tasks:
        for stats in task._stage_perf:
            if stats.stats_id in seen:
                continue
            seen.add(stats.stats_id)
            m = stats.custom_metrics
            read += int(m.get(DOCUMENTS_READ, 0))
            written += int(m.get(DOCUMENTS_WRITTEN, 0))
            quarantined += int(m.get(DOCUMENTS_QUARANTINED, 0))
            for key, value in m.items():
                if key.startswith(DROPPED_PREFIX):
                    reason = key[len(DROPPED_PREFIX):]
                    dropped[reason] = dropped.get(reason, 0) + int(value)
    total_dropped = sum(dropped.values())
    return {"documents_read": read, "documents_written": written,
            "documents_dropped": total_dropped, "documents_quarantined": quarantined,
            "dropped_by_reason": dict(sorted(dropped.items())),
            "identity_holds": read == written + total_dropped + quarantined}
