"""What a generation job loads and asks: plain data, shared by the CLI and the engines.

A `ModelUnderTest` says which weights to load and how (4-bit as trained, 16-bit,
with or without a LoRA adapter); a `GenerateJob` adds the questions and the answer
budget. Both cross the process boundary as JSON (jobs.py), so they hold only
strings, numbers and lists. No heavy imports here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class ModelUnderTest:
    """A model to load: weights, optionally a LoRA adapter on top, and the precision."""

    label: str  # what the report calls it: base, adapter, merged, ...
    path: str  # a local folder or a hub id
    adapter: str | None = None  # a PEFT adapter folder
    local: bool = True
    load_in_4bit: bool = False  # NF4: quantized on load, or the checkpoint is pre-quantized
    dequantize: bool = False  # a pre-quantized checkpoint, dequantized to `dtype` once loaded
    dtype: str = "auto"  # compute dtype: auto, float32, bfloat16, float16
    tokenizer: str | None = None  # folder whose tokenizer (and exact chat template) to use; default: path

    @property
    def precision(self) -> str:
        """How the weights are held: '4-bit' or the 16/32-bit dtype (for cache keys and reports)."""
        return "4-bit" if self.load_in_4bit and not self.dequantize else self.dtype


@dataclass
class Load:
    """Options every engine applies when it loads a model (safety and the run's template)."""

    device: str = "auto"  # auto, cpu, cuda
    chat_template: str | None = None  # for a base model that ships none (--chat-template)
    trust_remote_code: bool = False
    allow_pickle: bool = False


@dataclass
class GenerateJob:
    target: ModelUnderTest
    questions: list[str]
    max_new_tokens: int
    load: Load = field(default_factory=Load)
    batch_size: int | None = None  # hf: prompts per batch (default by device)
    gpu_memory_utilization: float = 0.85  # vllm
    max_lora_rank: int = 16  # vllm

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GenerateJob":
        return cls(**{**data, "target": ModelUnderTest(**data["target"]), "load": Load(**data["load"])})


@dataclass
class ParityJob:
    """Answers of several models to the same prompts, one model at a time, plus the
    largest logit difference between the first two on teacher-forced answers."""

    targets: list[ModelUnderTest]
    questions: list[str]
    max_new_tokens: int
    load: Load = field(default_factory=Load)
    batch_size: int | None = None
    # On a CPU, memory is not the limit a 24 GB card is: the first two models are then
    # compared in float32 arithmetic (their 16-bit weights upcast exactly), so the only
    # difference left is the rounding of the merged weights themselves.
    float32_on_cpu: bool = True
    # The merged export to check tensor by tensor against PEFT's own merge of the first
    # target (an adapter on the 16-bit base), computed in memory.
    merged_dir: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ParityJob":
        return cls(**{**data, "targets": [ModelUnderTest(**t) for t in data["targets"]], "load": Load(**data["load"])})
