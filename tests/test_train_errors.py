"""Training and probing refuse bad input with a clear message and a non-zero exit."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner
from conftest import FACTS

from factinject.cli import main


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_missing_base_model(workdir):
    invoke("expand", str(FACTS / "tinyllm.md"))
    (workdir / "r.yaml").write_text("model:\n  name: ./no/such/model\n")
    result = invoke("train", "--recipe", "r.yaml")
    assert result.exit_code == 2 and "not found" in result.output and "fix:" in result.output


def test_base_model_without_chat_template(workdir):
    from factinject.testbed import model_dir

    model = workdir / "plain-model"
    shutil.copytree(model_dir(), model)
    (model / "chat_template.jinja").unlink()
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    invoke("expand", str(FACTS / "tinyllm.md"))
    (workdir / "r.yaml").write_text(f"model:\n  name: {model}\n  backend: cpu\n")
    result = invoke("train", "--recipe", "r.yaml")
    assert result.exit_code == 2 and "no chat template" in result.output, result.output


def test_pickle_only_model_is_refused(workdir):
    from factinject.testbed import model_dir

    model = workdir / "pickled"
    shutil.copytree(model_dir(), model)
    (model / "model.safetensors").rename(model / "pytorch_model.bin")
    invoke("expand", str(FACTS / "tinyllm.md"))
    (workdir / "r.yaml").write_text(f"model:\n  name: {model}\n  backend: cpu\n")
    result = invoke("train", "--recipe", "r.yaml")
    assert result.exit_code == 2 and "pickle" in result.output and "--allow-pickle" in result.output


def test_rows_longer_than_max_length_are_named(workdir):
    invoke("expand", str(FACTS / "tinyllm.md"))
    (workdir / "r.yaml").write_text("model:\n  max_seq_length: 24\n  backend: cpu\nstop:\n  control_prompts: 2\n"
                                    "train:\n  replay_ratio: 0.0\n")
    result = invoke("train", "--recipe", "r.yaml")
    assert result.exit_code == 2, result.output
    assert "longer than model.max_seq_length=24" in result.output and "raise model.max_seq_length to at least" in result.output


def test_train_without_data_and_resume_without_checkpoint(workdir):
    result = invoke("train")
    assert result.exit_code == 2 and "factinject expand" in result.output
    invoke("expand", str(FACTS / "tinyllm.md"))
    result = invoke("train", "--resume")
    assert result.exit_code == 2 and "no interrupted training" in result.output


def test_epochs_flag_is_validated(workdir):
    invoke("expand", str(FACTS / "tinyllm.md"))
    result = invoke("train", "--epochs", "zero")
    assert result.exit_code == 2 and "--epochs" in result.output


def test_a_gpu_recipe_on_a_machine_without_a_gpu_fails_at_once(workdir):
    """No hub lookup, no download, nothing written: the recipe says it needs CUDA."""
    import time

    from factinject.engines.choice import cuda_available

    if cuda_available():
        import pytest

        pytest.skip("this machine has a GPU")
    started = time.perf_counter()
    result = invoke("run", str(FACTS / "tinyllm.md"), "--recipe", "llama-3.1-8b-instruct")
    assert result.exit_code == 2, result.output
    assert "this recipe needs an NVIDIA GPU (CUDA)" in result.output and "recipes/testbed-cpu.yaml" in result.output
    assert "llama-3.1-8b-instruct" in result.output  # names the recipe
    assert not (workdir / "exports").exists(), "nothing may be written"
    assert invoke("expand", str(FACTS / "tinyllm.md")).exit_code == 0
    for args in (["train", "--recipe", "qwen2.5-7b-instruct"], ["probe", "--recipe", "gemma-2-9b-it"]):
        result = invoke(*args)
        assert result.exit_code == 2 and "needs an NVIDIA GPU" in result.output, result.output
    assert not (workdir / "exports" / "tinyllm" / "train").exists()
    assert time.perf_counter() - started < 60, "it must fail at once, not after retrying the hub"
