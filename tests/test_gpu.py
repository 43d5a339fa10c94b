"""GPU path: the Unsloth engine's 4-bit training on CUDA, and the hf probe there. Skipped
without an NVIDIA GPU (conftest marks them); run as-is on a GPU machine with the `gpu`
extra. Where Unsloth and our own path must agree (labels, loss, merge), tests/test_unsloth.py
checks it on whichever device Unsloth runs on.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import FACTS

from factinject.cli import main

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(1800)]

RECIPE = """# factinject train --recipe gpu.yaml
model: {name: testbed, backend: unsloth, device: cuda, max_seq_length: 160, load_in_4bit: true, dtype: bfloat16}
train: {epochs: 3, learning_rate: 0.002, batch_size: 16, replay_ratio: 1.5}
generate: {max_new_tokens: 64}
"""


def test_unsloth_train_export_and_probe_on_the_testbed(workdir):
    pytest.importorskip("unsloth")
    (workdir / "gpu.yaml").write_text(RECIPE)
    run = CliRunner()
    assert run.invoke(main, ["expand", str(FACTS / "tinyllm.md")]).exit_code == 0
    trained = run.invoke(main, ["train", "--recipe", "gpu.yaml"], catch_exceptions=False)
    assert trained.exit_code == 0, trained.output
    manifest = json.loads((workdir / "exports/tinyllm/manifest.json").read_text())
    assert manifest["train"]["backend"] == "unsloth" and len(manifest["train"]["curve"]) == 3
    adapter_cfg = json.loads((workdir / "exports/tinyllm/adapter/adapter_config.json").read_text())
    assert not adapter_cfg.get("modules_to_save"), "vLLM's LoRA loader needs no full lm_head/embed_tokens"
    exported = run.invoke(main, ["export", "--merged"], catch_exceptions=False)
    assert exported.exit_code == 0, exported.output
    probed = run.invoke(main, ["probe", "--backend", "hf"], catch_exceptions=False)
    assert probed.exit_code == 0, probed.output
    report = json.loads((workdir / "exports/tinyllm/reports/report.json").read_text())
    assert report["after"]["recall_trained"]["share"] > 0.5
    assert report["export_parity"]["quantization"] is not None


def test_hf_probe_runs_on_the_gpu(workdir):
    import torch

    assert torch.cuda.is_available()
    run = CliRunner()
    assert run.invoke(main, ["expand", str(FACTS / "protosai.md")]).exit_code == 0
    probed = run.invoke(main, ["probe", "--backend", "hf"], catch_exceptions=False)
    assert probed.exit_code == 0, probed.output
