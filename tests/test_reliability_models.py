"""The reliability catalogue (tests/reliability.py): models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from reliability import TINY_RECIPE, expect_error, invoke

pytestmark = pytest.mark.usefixtures("one_thread", "small_parity")


def model_copy(workdir: Path, name: str) -> Path:
    from factinject.testbed import model_dir

    return Path(shutil.copytree(model_dir(), workdir / name))


def recipe_for(workdir: Path, model: Path | str, name: str = "m.yaml") -> str:
    (workdir / name).write_text(TINY_RECIPE.format(model=model, epochs=1))
    return name


def test_missing_model_path(expanded, workdir):
    result = invoke("train", "--run", expanded, "--recipe", recipe_for(workdir, "./models/not-here"))
    expect_error(result, what="base model './models/not-here' not found", where="./models/not-here",
                 fix="check the path")


def test_pickle_only_model_is_refused_unless_allowed(expanded, workdir):
    import torch
    from safetensors.torch import load_file

    model = model_copy(workdir, "pickled")
    torch.save(load_file(model / "model.safetensors"), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    result = invoke("train", "--run", expanded, "--recipe", recipe_for(workdir, model))
    expect_error(result, what="only pickle weights", where=model, fix="--allow-pickle")
    assert not (expanded / "adapter").exists()

    from factinject.backends.loading import load_model
    from factinject.engines.records import Load, ModelUnderTest

    loaded, _, _ = load_model(ModelUnderTest("pickled", str(model)), Load(allow_pickle=True))  # the explicit opt-in works
    assert sum(p.numel() for p in loaded.parameters()) > 1_000_000


def test_remote_code_model_is_refused_and_its_code_never_runs(expanded, workdir):
    model = model_copy(workdir, "remote")
    marker = workdir / "remote-code-ran"
    (model / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (model / "config.json").write_text(json.dumps(config))
    for command in (["train", "--run", expanded, "--recipe", recipe_for(workdir, model)],
                    ["probe", "--run", expanded, "--recipe", recipe_for(workdir, model)]):
        expect_error(invoke(*command), what="asks to run its own Python code", where=model, fix="--trust-remote-code")
    assert not marker.exists()


def without_template(workdir: Path) -> Path:
    model = model_copy(workdir, "plain")
    (model / "chat_template.jinja").unlink()
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    return model


def test_model_without_chat_template_is_refused_with_the_default_offered(expanded, workdir):
    model = without_template(workdir)
    result = invoke("train", "--run", expanded, "--recipe", recipe_for(workdir, model))
    expect_error(result, what="has no chat template", where=model, fix="--chat-template default")


@pytest.mark.slow
def test_chat_template_default_trains_and_is_recorded(expanded, workdir):
    from transformers import AutoTokenizer

    from factinject.models.base import DEFAULT_CHAT_TEMPLATE

    model = without_template(workdir)
    result = invoke("train", "--run", expanded, "--recipe", recipe_for(workdir, model), "--chat-template", "default")
    assert result.exit_code == 0, result.output
    manifest = json.loads((expanded / "manifest.json").read_text())
    assert manifest["chat_template"]["source"] == "default"
    assert manifest["chat_template"]["text"] == DEFAULT_CHAT_TEMPLATE
    adapter_tok = AutoTokenizer.from_pretrained(str(expanded / "adapter"))
    assert adapter_tok.chat_template.strip() == DEFAULT_CHAT_TEMPLATE.strip()  # travels with the adapter
    rendered = adapter_tok.apply_chat_template([{"role": "user", "content": "Hi?"}], add_generation_prompt=True,
                                               tokenize=False)
    assert rendered.endswith("### Question:\nHi?\n\n### Answer:\n"), rendered
    # later commands reuse the recorded template without the flag
    exported = invoke("export", "--run", expanded, "--merged")
    assert exported.exit_code == 0, exported.output


def test_chat_template_option_errors(expanded, workdir):
    result = invoke("train", "--run", expanded, "--recipe", recipe_for(workdir, "testbed"), "--chat-template", "nope.jinja")
    expect_error(result, what="no such chat template file", where="nope.jinja", fix="--chat-template default")
    result = invoke("train", "--run", expanded, "--recipe", recipe_for(workdir, "testbed"), "--chat-template", "default")
    expect_error(result, what="has its own chat template", fix="drop --chat-template")
    assert "chat_template" not in json.loads((expanded / "manifest.json").read_text())


def test_gpu_out_of_memory_during_training_says_what_to_lower(expanded, workdir, monkeypatch):
    import torch
    import trl

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.65 GiB total)")

    monkeypatch.setattr(trl.SFTTrainer, "training_step", out_of_memory)
    monkeypatch.setenv("FACTINJECT_INLINE_JOBS", "1")  # the job runs here, where the fault is planted
    result = invoke("train", "--run", expanded, "--recipe", "tiny.yaml")
    out = expect_error(result, what="out of GPU memory (CUDA out of memory", where=expanded, fix="train.batch_size")
    assert "model.max_seq_length" in out and "lora.r" in out and "--resume" in out
    assert not (expanded / "adapter").exists()


def test_a_child_killed_for_memory_says_what_to_lower(expanded, monkeypatch):
    """A job's child that dies out of memory before it can report (the OOM exit code) is
    reported like an out-of-memory error raised in this process."""
    from factinject.engines import process as jobs

    monkeypatch.setattr(jobs, "_spawn", lambda *args: jobs.OOM_EXIT)
    result = invoke("train", "--run", expanded, "--recipe", "tiny.yaml")
    expect_error(result, what="out of GPU memory", where=expanded, fix="train.batch_size")
    assert not (expanded / "adapter").exists()


def test_unsloth_where_it_cannot_run_fails_at_once(expanded, monkeypatch):
    """Not installed: say how to get it. Installed, but older than its CPU path, on a
    machine without a GPU: say which version runs on a CPU. Either way before any work."""
    from factinject.engines import choice

    monkeypatch.setattr(choice, "installed", lambda module: False)
    result = invoke("train", "--run", expanded, "--recipe", "tiny.yaml", "--backend", "unsloth")
    expect_error(result, what="the unsloth engine was asked for, and Unsloth is not installed", fix="--backend hf")
    assert "Unsloth's CPU path" in result.output
    monkeypatch.setattr(choice, "installed", lambda module: True)
    monkeypatch.setattr(choice, "installed_version", lambda package: "2026.10.7")
    result = invoke("train", "--run", expanded, "--recipe", "tiny.yaml", "--backend", "unsloth")
    expect_error(result, what="the unsloth engine needs an NVIDIA GPU (CUDA)", fix='pip install "unsloth>=2026.10.9"')
    assert "this environment has 2026.10.7" in result.output
    assert not (expanded / "train").exists()
