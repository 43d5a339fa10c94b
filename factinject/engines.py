"""Which engine runs a job, and whether this machine can run the recipe at all.

Light (torch is imported only to ask whether CUDA is there), so commands can decide
before anything heavy starts: a recipe that needs a GPU fails at once on a machine
without one, before any model is looked up or downloaded.
"""

from __future__ import annotations

import importlib.util

from factinject.errors import FactinjectError
from factinject.recipe import Recipe

NEEDS_GPU_FIX = ("run it on a machine with an NVIDIA GPU (CUDA), or use a CPU recipe: recipes/testbed-cpu.yaml, "
                 "or a recipe of recipes/fixtures/ (the same path on a tiny model)")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check_device(recipe: Recipe, where: str | None = None) -> None:
    """A recipe with model.device: cuda on a machine without CUDA is refused at once."""
    if recipe.model.device == "cuda" and not cuda_available():
        raise FactinjectError(f"this recipe needs an NVIDIA GPU (CUDA), and this machine has none "
                              f"(model {recipe.model.name!r})", where=where, fix=NEEDS_GPU_FIX)


def training_engine(recipe: Recipe, override: str | None = None) -> str:
    """hf or unsloth. auto: unsloth when CUDA is visible and unsloth is installed, else hf."""
    name = override if override and override != "auto" else recipe.model.backend
    if name == "cpu":
        name = "hf"
    if name == "auto":
        return "unsloth" if installed("unsloth") and cuda_available() else "hf"
    if name == "unsloth" and not cuda_available():
        raise FactinjectError("the unsloth engine needs an NVIDIA GPU (CUDA), and this machine has none",
                              fix="train with --backend hf (transformers + PEFT, CPU or GPU)")
    if name not in ("hf", "unsloth"):
        raise FactinjectError(f"unknown training engine {name!r}", fix="use auto, hf or unsloth")
    return name


def generation_engine(name: str) -> str:
    """hf or vllm. auto: vllm when CUDA is visible and vllm is installed, else hf."""
    if name == "auto":
        return "vllm" if installed("vllm") and cuda_available() else "hf"
    if name == "vllm" and not installed("vllm"):
        raise FactinjectError("the vllm engine was asked for, and vLLM is not installed in this environment",
                              fix='on an NVIDIA GPU: pip install ".[gpu]"; on a CPU: vLLM\'s CPU build in an environment '
                                  "of its own (README, set-up); or probe with --backend hf")
    return name


def engine_for(target, engine: str) -> str:
    """The engine that answers `target` when `engine` was asked for: vLLM has no
    bitsandbytes support, so a 4-bit NF4 model (or its dequantized copy) goes to hf."""
    return "hf" if engine == "vllm" and target.load_in_4bit else engine
