"""Language id as a Ray actor pool or as Ray tasks: the fixed cost of the first stage task.

    python -m benchmarks.langid_mode [--input data/sample] [--repeats 3] [--num-cpus 2]

One embedded Ray (started once, as a flow does), then the flow's first stage group
(partition + read + normalise + language id) run through ``RayDataExecutor`` alternately with
the language identifier in actor mode and in task mode, ``--repeats`` times each. Prints every
run's wall time and the per-mode min/median/max and the labels' digest (both modes must label
identically).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def stages(input_path: str, mode: str) -> list:
    from curator_stages.io import JsonlReader
    from curator_stages.text import TextNormalizer
    from curator_stages.text.language import LanguageIdentifier

    class Lid(LanguageIdentifier):
        def ray_stage_spec(self):  # the A/B switch; everything else is the stage itself
            return {"is_actor_stage": mode == "actor"}

    return [*JsonlReader(input_path, text_field="text").decompose(),
            TextNormalizer(text_field="text"), Lid()]


def digest(tasks) -> str:
    h = hashlib.sha256()
    rows = []
    for t in tasks:
        table = t.to_pyarrow()
        rows += zip(table.column("_id").to_pylist() if "_id" in table.column_names
                    else table.column("text").to_pylist(), table.column("language").to_pylist())
    for row in sorted(map(str, rows)):
        h.update(row.encode())
    return h.hexdigest()[:16]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", default=str(REPO / "data/sample"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    from curator_stages.backends.ray_data import RayDataExecutor
    from curator_stages.orchestration.ray_session import RaySession

    times: dict[str, list[float]] = {"actor": [], "task": []}
    digests: dict[str, set[str]] = {"actor": set(), "task": set()}
    with RaySession(num_cpus=args.num_cpus):
        for r in range(args.repeats):
            for mode in ("actor", "task"):
                start = time.perf_counter()
                result = RayDataExecutor(progress_bars=False).execute(stages(args.input, mode))
                wall = time.perf_counter() - start
                times[mode].append(wall)
                digests[mode].add(digest(result))
                print(f"repeat {r + 1} {mode:5s} {wall:6.2f}s  {len(result)} tasks", flush=True)
    for mode, values in times.items():
        print(f"{mode:5s} min {min(values):.2f}  median {statistics.median(values):.2f}  "
              f"max {max(values):.2f}  digests {sorted(digests[mode])}")
    ratios = [a / t for a, t in zip(times["actor"], times["task"])]
    print(f"actor/task wall, paired: min {min(ratios):.2f} median {statistics.median(ratios):.2f}"
          f" max {max(ratios):.2f}")
    return 0 if digests["actor"] == digests["task"] else 1


if __name__ == "__main__":
    sys.exit(main())
