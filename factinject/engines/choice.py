"""Which engine runs a job, and whether this machine can run the recipe at all.

Light (torch is imported only to ask whether CUDA is there), so commands can decide
before anything heavy starts: a recipe that needs a GPU fails at once on a machine
without one, before any model is looked up or downloaded. What each engine needs is
the table in `factinject.engines`. `recipe` is a `factinject.recipe.Recipe`; only its
`model` section is read.
"""

from __future__ import annotations

import importlib.util

from factinject.engines import (
    ENGINES,
    FALLBACK,
    GENERATE,
    TRAIN,
    canonical,
    either,
    names_for,
)
from factinject.errors import FactinjectError

NEEDS_GPU_FIX = ("run it on a machine with an NVIDIA GPU (CUDA), or use a CPU recipe: recipes/testbed-cpu.yaml, "
                 "or a recipe of recipes/fixtures/ (the same path on a tiny model)")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def installed_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def runs_on_cpu(engine) -> bool:
    """Whether `engine` runs on this machine without CUDA: it never needs it, or its
    installed package is recent enough to fall back to the CPU (Unsloth from 2026.10.9)."""
    if not engine.needs_cuda:
        return True
    if engine.cpu_since is None or engine.package is None:
        return False
    found = installed_version(engine.package)
    if found is None:
        return False
    from packaging.version import Version

    return Version(found) >= Version(engine.cpu_since)


def check_device(recipe, where: str | None = None) -> None:
    """A recipe with model.device: cuda on a machine without CUDA is refused at once."""
    if recipe.model.device == "cuda" and not cuda_available():
        raise FactinjectError(f"this recipe needs an NVIDIA GPU (CUDA), and this machine has none "
                              f"(model {recipe.model.name!r})", where=where, fix=NEEDS_GPU_FIX)


def _auto(operation: str) -> str:
    """The first engine of the table that `auto` may pick here, else the fallback."""
    for name in names_for(operation):
        engine = ENGINES[name]
        if engine.auto_on_cuda and (engine.package is None or installed(engine.package)) and cuda_available():
            return name
    return FALLBACK


def _checked(name: str, operation: str) -> str:
    """`name` if it can do `operation` on this machine; otherwise an error that says what to use."""
    usable = names_for(operation)
    if name not in usable:
        raise FactinjectError(f"unknown {'training' if operation == TRAIN else operation} engine {name!r}",
                              fix=f"use {either(['auto', *usable])}")
    engine = ENGINES[name]
    verb = "probe" if operation == GENERATE else "train"
    if engine.package and not installed(engine.package):
        raise FactinjectError(f"the {name} engine was asked for, and {engine.library} is not installed in this "
                              f"environment", fix=f"{engine.install}; or {verb} with --backend {FALLBACK}")
    if engine.needs_cuda and not cuda_available() and not runs_on_cpu(engine):
        since = (f"; {engine.library} {engine.cpu_since} and later also run on a CPU, this environment has "
                 f"{installed_version(engine.package)}" if engine.cpu_since else "")
        raise FactinjectError(f"the {name} engine needs an NVIDIA GPU (CUDA), and this machine has none{since}",
                              fix=f"use --backend {FALLBACK} (transformers + PEFT, CPU or GPU)"
                                  + (f", or pip install \"{engine.package}>={engine.cpu_since}\"" if since else ""))
    return name


def training_engine(recipe, override: str | None = None) -> str:
    """The engine that trains: --backend, else the recipe's model.backend; auto picks by the table."""
    name = canonical(override if override and override != "auto" else recipe.model.backend)
    return _auto(TRAIN) if name == "auto" else _checked(name, TRAIN)


def generation_engine(name: str) -> str:
    """The engine that answers probes: `name`, or auto's pick by the table."""
    name = canonical(name)
    return _auto(GENERATE) if name == "auto" else _checked(name, GENERATE)


def engine_for(target, engine: str) -> str:
    """The engine that answers `target` when `engine` was asked for: one that loads no
    NF4 model (vLLM) hands a 4-bit model (or its dequantized copy) to the fallback."""
    return FALLBACK if target.load_in_4bit and not ENGINES[engine].loads_nf4 else engine
