"""An embedded Ray started the way a flow starts it, from the flow's own parameters, with more
objects put into it than its object store holds; prints what Ray reports, as JSON.

Run in a process of its own (the test session's shared Ray stays untouched):
``python tests/scripts/object_store_probe.py --input ... --object-store-memory 100MB
--spill-dir DIR``, every argument being a text_curation flow parameter. With ``--join``
instead, it joins ``RAY_ADDRESS`` (a warm Ray) with no parameters of its own.
"""

from __future__ import annotations

import json
import os
import sys
import time

#: Bytes per object: six of them exceed a 100 MB store.
CHUNK = 30_000_000
COUNT = 6


def spilled_files(directory: str) -> list[str]:
    return sorted(os.path.join(root, name) for root, _, names in os.walk(directory)
                  for name in names)


def fill(spill_dir: str) -> dict:
    """Put COUNT objects of CHUNK bytes, wait for Ray to spill, read every one back."""
    import numpy as np
    import ray

    store = float(ray.cluster_resources().get("object_store_memory", 0))
    refs = [ray.put(np.full(CHUNK, i, dtype=np.uint8)) for i in range(COUNT)]
    deadline = time.monotonic() + 60
    while not spilled_files(spill_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    spilled = spilled_files(spill_dir)
    back = [int(ray.get(ref)[-1]) for ref in refs]  # restored from disk where spilled
    return {"object_store_memory": store, "spilled": spilled, "read_back": back,
            "address": ray.get_runtime_context().gcs_address}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--join"]:
        from curator_stages.runtime.ray_cluster import join_cluster

        join_cluster(os.environ["RAY_ADDRESS"], log_to_driver=False)  # finds the warm token
        print(json.dumps(fill(argv[1])))
        return 0
    from curator_stages.orchestration.params import parse_params
    from curator_stages.runtime.session import RaySession
    from flows.text_curation import TextCurationParams

    params = parse_params(TextCurationParams, argv)
    with RaySession.for_params(params, warm_workers=False):
        result = fill(params.spill_dir or "")
    result["left_after_shutdown"] = spilled_files(params.spill_dir or "")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
