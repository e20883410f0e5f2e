"""curator_stages: Prefect-orchestrated, Ray Data-executed curation of language-model text.

The public API is the stage model; backends, I/O and text stages live in their own subpackages
(``curator_stages.backends.ray_data``, ``curator_stages.io``, ``curator_stages.text``,
``curator_stages.orchestration``) so importing the core stays cheap.
"""

# First: Arrow chooses its allocator when pyarrow is imported (see runtime/arrow_pool.py).
from curator_stages.runtime.arrow_pool import use_system_pool_in_driver

use_system_pool_in_driver()

from curator_stages.execution import ExecutionResult, ExecutionSummary, Executor
from curator_stages.function_stage import processing_stage
from curator_stages.identity import StageIdentityError
from curator_stages.pipeline import Pipeline
from curator_stages.resources import Resources
from curator_stages.stage import (
    CompositeStage,
    GlobalStage,
    ProcessingStage,
    RayStageSpecKeys,
    StageError,
    StageInputError,
    record_drops,
    record_metrics,
)
from curator_stages.tasks import DocumentBatch, EmptyTask, FileGroupTask, StagePerfStats, Task

__version__ = "0.1.0"

__all__ = [
    "CompositeStage",
    "DocumentBatch",
    "EmptyTask",
    "ExecutionResult",
    "ExecutionSummary",
    "Executor",
    "FileGroupTask",
    "GlobalStage",
    "Pipeline",
    "ProcessingStage",
    "RayStageSpecKeys",
    "Resources",
    "StageError",
    "StageIdentityError",
    "StageInputError",
    "StagePerfStats",
    "Task",
    "processing_stage",
    "record_drops",
    "record_metrics",
]
