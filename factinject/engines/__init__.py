"""The engines, declared once: which library does which job, and what each needs.

Everything that names an engine reads this table: the child-process runner
(`process.run_job`), the choice of engine (`choice`), the CLI's `--backend` and
`--compare-with` choices and the recipe's `model.backend`. Adding an engine is one
entry here plus its module under `factinject/backends/`, whose functions are named
after the operations it lists.

Light on purpose: no imports beyond the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass

TRAIN, GENERATE = "train", "generate"  # the two operations an engine is chosen for


@dataclass(frozen=True)
class Engine:
    name: str
    module: str  # under factinject/backends/, imported only in a job's child process
    operations: tuple[str, ...]  # the module's entry points: train, merge, generate, ...
    library: str  # what it is built on, as messages name it
    package: str | None  # the library it needs installed (None: the core install has it)
    needs_cuda: bool  # refused on a machine without CUDA (unless its package is at least cpu_since)
    auto_on_cuda: bool  # `auto` picks it when CUDA and its package are there
    loads_nf4: bool  # can load a bitsandbytes 4-bit NF4 model
    install: str = ""  # how to get its package, for the error when it is missing
    cpu_since: str | None = None  # the package version from which it also runs on a CPU


ENGINES: dict[str, Engine] = {e.name: e for e in (
    Engine("hf", "factinject.backends.hf",
           ("train", "merge", "generate", "generate_each", "parity", "export", "agreement"),
           library="transformers + PEFT", package=None, needs_cuda=False, auto_on_cuda=False, loads_nf4=True),
    Engine("unsloth", "factinject.backends.unsloth", ("train",),
           library="Unsloth", package="unsloth", needs_cuda=True, auto_on_cuda=True, loads_nf4=True,
           install='on an NVIDIA GPU: pip install ".[gpu]"; on a CPU: Unsloth\'s CPU path in an environment of its '
                   "own (README, set-up)",
           cpu_since="2026.10.9"),
    Engine("vllm", "factinject.backends.vllm", ("generate",),
           library="vLLM", package="vllm", needs_cuda=False, auto_on_cuda=True, loads_nf4=False,
           install='on an NVIDIA GPU: pip install ".[gpu]"; on a CPU: vLLM\'s CPU build in an environment '
                   "of its own (README, set-up)"),
    Engine("llamacpp", "factinject.backends.llamacpp", ("generate",),
           library="llama.cpp (xllamacpp)", package="xllamacpp", needs_cuda=False, auto_on_cuda=False, loads_nf4=False,
           install='pip install -e ".[gguf]" (on Debian/Ubuntu also apt-get install libgomp1)'),
)}
FALLBACK = "hf"  # what `auto` picks when no preferred engine can run here; it runs everywhere
ALIASES = {"cpu": "hf"}  # earlier names, still accepted in recipes and on the command line


def names_for(operation: str) -> tuple[str, ...]:
    """The engines that can do `operation` (train, generate, ...), in table order."""
    return tuple(name for name, e in ENGINES.items() if operation in e.operations)


def choices(operation: str, *, auto: bool = True, aliases: bool = False) -> list[str]:
    """What `--backend` accepts for `operation`: auto, the engines, and (optionally) old names."""
    names = list(names_for(operation))
    olds = [old for old, new in ALIASES.items() if aliases and new in names]
    return (["auto"] if auto else []) + names + olds


def canonical(name: str) -> str:
    """An engine's current name ('cpu' -> 'hf'); other names pass through unchanged."""
    return ALIASES.get(name, name)


def either(names) -> str:
    """('auto', 'hf', 'unsloth') -> 'auto, hf or unsloth'."""
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
