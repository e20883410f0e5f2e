"""A successful library run is quiet: the README's example prints no warning or error line.

The example runs in its own Python process, as a user runs it (its own embedded Ray, stdout not
a terminal), and its whole console output is checked. It also prints the run's public summary,
whose numbers must balance: read = out + dropped + quarantined.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: The one line that cannot be silenced from Python: the driver's C++ core worker logs it once
#: per actor pool because Ray Data 2.60 passes its actors' constructor arguments as object
#: references with restarts on (ray-project/ray#57733, open). Allowed by its exact text only.
RAY_DATA_ACTOR_ARGS_LINE = re.compile(
    r"core_worker\.cc:\d+: Actor with class name: 'MapWorker\(.*\)' and ID: '\w+' has "
    r"constructor arguments in the object store and max_restarts > 0")

#: What a warning or error line looks like on this console: Python logging's level name, the
#: C++ logs' " E "/" W " prefix ("[date time E pid tid] file.cc:line: ..."), or an error's name.
NOISE = re.compile(r"WARNING|Error|Failed to convert|^\[[^\]]* [EW] \d+ \d+\]")


def _library_snippet() -> str:
    section = (REPO / "README.md").read_text().split("## Library", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_library_example_prints_no_warning_and_a_balanced_summary(tmp_path):
    out_dir = tmp_path / "lib_demo"
    code = _library_snippet().replace('"output/lib_demo"', repr(str(out_dir)))
    code += ("\nimport json\nprint('SUMMARY ' + json.dumps(written.summary.to_dict()))\n"
             "print('TASKS ' + json.dumps([t.task_id for t in written]))\n")
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own embedded Ray
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    done = subprocess.run([sys.executable, str(script)], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=900)
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-4000:]

    noisy = [line for line in console.splitlines()
             if NOISE.search(line) and not RAY_DATA_ACTOR_ARGS_LINE.search(line)]
    assert noisy == [], "a successful library run printed:\n" + "\n".join(noisy)

    lines = done.stdout.splitlines()
    summary = json.loads(next(x for x in lines if x.startswith("SUMMARY "))[len("SUMMARY "):])
    task_ids = json.loads(next(x for x in lines if x.startswith("TASKS "))[len("TASKS "):])
    assert summary["documents_read"] > 0 and summary["documents_out"] > 0
    assert summary["documents_read"] == (summary["documents_out"] + summary["documents_dropped"]
                                         + summary["documents_quarantined"])
    assert summary["documents_dropped"] == sum(summary["dropped_by_reason"].values())
    assert summary["dropped_by_reason"].get("exact_duplicate", 0) > 0
    assert summary["balanced"] is True
    assert task_ids and all(t.startswith("curate-") for t in task_ids)
