"""The jobs the engines run, as typed records: plain data, shared by the stages and the engines.

A `ModelUnderTest` says which weights to load and how (4-bit as trained, 16-bit,
with or without a LoRA adapter); a `GenerateJob` adds the questions and the answer
budget; a `ParityJob` asks several models the same questions; a `MergeJob` says what
to merge into what; a `TrainJob` carries everything training needs, and the engine
answers with a `TrainResult` of one `EpochRecord` per epoch. All of them cross the
process boundary as JSON (engines/process.py), so they hold only strings, numbers
and lists. No heavy imports here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_DIR = "train"  # run/train/: checkpoints, curve, base answers (for --resume)


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
    answer_cache: bool = False  # a base model's answers: from and into the answer cache (models/answer_cache.py)

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


@dataclass
class AgreementJob:
    """The base model's answers fed to an adapter's model, with the adapter on and off
    (teacher-forced locality): what the adapter changed where it should change nothing."""

    target: ModelUnderTest  # an adapter on the base it was trained on
    questions: list[str]
    answers: list[str]  # the base model's answers to them
    load: Load = field(default_factory=Load)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AgreementJob:
        return cls(**{**data, "target": ModelUnderTest(**data["target"]), "load": Load(**data["load"])})


@dataclass
class MergeJob:
    """The adapter merged into 16-bit base weights, shard by shard, into `out`."""

    base: str  # a local folder or a hub id
    base_local: bool
    adapter: str
    out: str
    dtype: str  # the export dtype
    max_shard_bytes: int
    chat_template: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MergeJob":
        return cls(**data)


@dataclass
class EpochRecord:
    epoch: int
    loss: float | None
    dev_recall: float
    dev_correct: int
    dev_n: int
    drift: float  # share of drift-control prompts whose greedy answer changed
    drift_changed: int
    drift_n: int
    seconds: float  # the epoch, its evaluation included
    train_seconds: float | None = None  # the training steps alone
    step_losses: list[float] = field(default_factory=list)  # the loss at every logging step of the epoch


@dataclass
class TrainJob:
    """Everything a training engine needs; JSON-serialisable (it runs in a child process)."""

    run_dir: str
    model_name: str
    model_path: str
    recipe: dict  # the resolved recipe (Recipe.model_dump())
    fact_rows: list[dict]
    dev_rows: list[dict]  # {"fact_id", "question", "answer_key"}
    replay_prompts: list[str]
    drift_prompts: list[str]
    contrast_prompts: list[str] = field(default_factory=list)  # always trained, never sampled away
    resume: bool = False
    allow_pickle: bool = False
    trust_remote_code: bool = False
    chat_template: str | None = None  # for a base model that ships none (--chat-template)
    model_local: bool = True
    fingerprint: str = ""
    answer_cache: bool = True  # the base model's answers from and into the answer cache (models/answer_cache.py)

    @property
    def state_dir(self) -> Path:
        return Path(self.run_dir) / STATE_DIR

    @property
    def checkpoint_dir(self) -> Path:
        return self.state_dir / "checkpoints"

    @property
    def best_adapter_dir(self) -> Path:
        return self.state_dir / "best-adapter"


@dataclass
class TrainResult:
    curve: list[EpochRecord]
    best_epoch: int
    reason: str
    backend: str
    seconds: float
    base_identity: dict
    replay_rows: int = 0
    row_counts: dict = field(default_factory=dict)  # replay, contrast, unfinished_left_out

    @classmethod
    def from_dict(cls, data: dict) -> "TrainResult":
        return cls(**{**data, "curve": [EpochRecord(**r) for r in data["curve"]]})
