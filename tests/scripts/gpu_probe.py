"""Run a GPU stage on a Ray with one logical GPU (started by the executor) and report.

Prints one JSON line: the GPU ids and CUDA_VISIBLE_DEVICES each task saw in its actor, the
stage's plan, and whether Ray is still initialised after execute() (it must not be: the
executor started it).
"""

import json
import os

import pandas as pd
import ray

from curator_stages import DocumentBatch, ProcessingStage, Resources
from curator_stages.backends.ray_data import RayDataExecutor


class GpuProbe(ProcessingStage):
    resources = Resources(cpus=1, gpus=1)
    batch_size = None  # the adapter must turn this into 1 for a GPU stage

    def process(self, task):
        return task.derive(task.data, gpu_ids=[int(g) for g in ray.get_gpu_ids()],
                           cuda=os.environ.get("CUDA_VISIBLE_DEVICES"))


if __name__ == "__main__":
    tasks = [DocumentBatch(f"t{i}", "ds", pd.DataFrame({"id": [str(i)], "text": ["x"]}))
             for i in range(3)]
    executor = RayDataExecutor(
        ray_init_kwargs={"num_cpus": 2, "num_gpus": 1, "include_dashboard": False},
        progress_bars=False,
    )
    out = executor.execute([GpuProbe()], tasks)
    plan = executor.plans[0]
    print(json.dumps({
        "gpu_ids": [t.metadata["gpu_ids"] for t in out],
        "cuda_visible_devices": [t.metadata["cuda"] for t in out],
        "mode": plan.mode,
        "batch_size": plan.batch_size,
        "ray_initialized_after": ray.is_initialized(),
    }))
