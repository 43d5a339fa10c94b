"""Training logs where users look: train.report_to names trackers (none by default);
one that is not installed is refused before any work, and each epoch's dev recall and
drift go to the trackers beside the loss."""

from __future__ import annotations

from pathlib import Path

import pytest

from factinject.errors import FactinjectError
from factinject.recipe import Recipe, load_recipe


def test_no_tracker_by_default_and_only_known_ones():
    assert load_recipe("testbed-cpu").train.report_to == []
    assert Recipe.model_validate({"train": {"report_to": ["tensorboard", "mlflow"]}}).train.report_to == [
        "tensorboard", "mlflow"]
    with pytest.raises(ValueError, match="report_to"):
        Recipe.model_validate({"train": {"report_to": ["comet"]}})


def test_a_tracker_that_is_not_installed_is_named_before_training(monkeypatch):
    from factinject.train import stage

    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    recipe = Recipe.model_validate({"train": {"report_to": ["wandb"]}})
    with pytest.raises(FactinjectError, match="train.report_to names wandb, which is not installed") as err:
        stage.check_trackers(recipe)
    assert "pip install wandb" in err.value.fix


def test_the_trainer_is_told_the_trackers_and_gets_each_epoch(tmp_path, monkeypatch):
    from factinject.backends.epochs import EpochCallback
    from factinject.backends.sft import sft_config
    from factinject.engines.records import TrainJob

    recipe = Recipe.model_validate({"train": {"report_to": ["tensorboard"], "epochs": 1}})
    job = TrainJob(run_dir=str(tmp_path), model_name="m", model_path="m", recipe=recipe.model_dump(), fact_rows=[],
                   dev_rows=[], replay_prompts=[], drift_prompts=[], contrast_prompts=[])
    assert sft_config(job, use_cpu=True).report_to == ["tensorboard"]
    assert sft_config(TrainJob(**{**job.__dict__, "recipe": Recipe().model_dump()}), use_cpu=True).report_to == []

    logged = []

    class Trainer:
        def log(self, logs):
            logged.append(logs)

    class State:
        epoch = 1.0

    class Saves:  # the kept epoch's adapter and tokenizer are saved whole
        def save_pretrained(self, path):
            (Path(path) / "saved").write_text("x")

    monkeypatch.setattr("factinject.backends.epochs.generate", lambda *a, **k: ([], []))
    callback = EpochCallback(job, tokenizer=Saves(), drift_reference=[], curve=[])
    callback.trainer = Trainer()
    callback.to_inference = callback.to_training = lambda model: None
    callback.on_epoch_end(None, State(), type("Control", (), {"should_training_stop": False})(), model=Saves())
    assert logged == [{"dev_recall": 0.0, "drift": 0.0}]
