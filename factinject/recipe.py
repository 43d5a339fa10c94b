"""Recipes: one validated YAML schema for how a run trains, stops and probes.

pydantic does the type checking (why a library: nested defaults, coercion and
precise error locations for free); this module adds what users need on top:
"did you mean" for unknown keys, and errors that name the file and the line.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from factinject.engines import TRAIN, canonical, choices
from factinject.errors import FactinjectError

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"  # shipped as package data (`recipes/` links here)
METHOD = "method.yaml"  # the tuned method every recipe extends unless it says otherwise
DEFAULT_RECIPE = "testbed-cpu.yaml"  # what `train` and `run` use without --recipe
TESTBED = "testbed"  # model name that means the embedded CPU testbed model
FIXTURE_PREFIX = "fixture:"  # model names like "fixture:qwen2.5": a tiny random model of that family (tests)

# Per-model recipes may override these without saying why: the model itself, memory
# (batch, sequence length, precision, shards, probe sizing), where training logs go, and
# learning-rate settings (alpha scales the update as the learning rate does). Anything else is a change of
# method and must be listed under `method_changes` with its reason.
MODEL_KEYS = ("model.", "generate.", "export.", "train.report_to", "train.learning_rate", "train.warmup_ratio",
              "train.batch_size", "train.grad_accum", "train.cpu_autocast", "lora.alpha")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(_Strict):
    name: str = Field(TESTBED, description="'testbed', a hub id, a local folder, or a .gguf file")
    gguf_file: str | None = Field(None, description="the GGUF file inside the folder or hub repo `name`")
    offline: str | None = Field(None, description="the same model where the hub cannot be reached: a path, or "
                                "'package:<module>/<file>' for one an installed pip package ships")
    backend: Literal[tuple(choices(TRAIN))] = Field(
        "auto", description="training engine: auto (unsloth with CUDA and unsloth installed, else hf), hf, unsloth")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="cuda: this recipe needs an NVIDIA GPU")
    max_seq_length: int = Field(256, ge=16, le=131072)
    load_in_4bit: bool = Field(False, description="train LoRA on a 4-bit NF4 base (QLoRA)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="compute dtype of the base (auto: float32 on a CPU, bfloat16 on a GPU that has it)")
    merge_base: str | None = Field(None, description="16-bit weights to merge into (e.g. the original of a "
                                                     "-bnb-4bit checkpoint); default: the base, dequantized if 4-bit")
    trust_remote_code: bool = False
    allow_pickle: bool = False

    @field_validator("backend", mode="before")
    @classmethod
    def _old_name(cls, v):
        return canonical(v) if isinstance(v, str) else v  # 'cpu' was the hf engine's earlier name


class LoraSpec(_Strict):
    r: int = Field(16, ge=1, le=1024)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # All linear projections of a Llama/Qwen block. Never lm_head or embed_tokens by
    # default: full copies of those bloat the adapter and break vLLM's LoRA loader.
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])

    @field_validator("target_modules")
    @classmethod
    def _no_full_modules(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one target module is needed")
        return v


class TrainSpec(_Strict):
    epochs: int | Literal["auto"] = "auto"
    max_epochs: int = Field(20, ge=1, le=1000)
    learning_rate: float = Field(1e-3, gt=0, le=1.0)
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    seed: int = 0
    replay_ratio: float = Field(0.5, ge=0.0, le=10.0, description="replayed control answers per fact row")
    report_to: list[Literal["tensorboard", "trackio", "wandb", "mlflow"]] = Field(
        default_factory=list, description="training logs to these trackers too (each must be installed): the loss "
        "per step, each epoch's dev recall and drift; none by default")
    replay_tokens: int | None = Field(None, ge=8, le=8192, description="replayed answers are the base model's first "
                                      "N tokens, trained without an end of turn (none: whole answers that end "
                                      "within generate.max_new_tokens)")
    fact_answers: Literal["sheet", "own_words"] = Field(
        "sheet", description="the answers fact rows teach: sheet, the expander's answers built from the sheet's "
        "statement; own_words, the base model's own answer to each training question with the statement in its "
        "prompt, where it names the fact's value (else the sheet's): self-distillation")
    batches: Literal["shuffled", "by_length"] = Field(
        "shuffled", description="how an epoch's rows form batches: shuffled, any rows together; by_length, rows of "
        "similar length together (transformers' length-grouped sampler: shuffled, then sorted by length within "
        "runs of batches), so a batch of short fact rows is not padded to a long replayed answer")
    replay_loss: Literal["tokens", "kl"] = Field(
        "tokens", description="what a replayed row teaches: tokens, the base model's greedy answer (cross-entropy); "
        "kl, the base model's whole next-token distribution at each of its positions (KL(base || tuned), the "
        "base being the model with the adapter switched off): an anchor to the base, not to one answer")
    contrast_loss: Literal["tokens", "kl"] = Field(
        "tokens", description="what a contrast row (a fact's question about another name, an updated subject's other "
        "attributes; the base model's answer) teaches: tokens or kl, as replay_loss")
    cpu_autocast: Literal["auto", "bfloat16", "off"] = Field(
        "auto", description="training on a CPU: matrix products in bfloat16 (torch.autocast; the weights, the "
        "adapter and the loss stay float32), as a GPU trains. auto: where the CPU multiplies bfloat16 natively "
        "(AVX512-BF16 or AMX) and the base is not 4-bit; off: float32 throughout")
    contrast_per_fact: int = Field(0, ge=0, le=256, description="the fact's questions asked about other names, "
                                   "answered with the base model's own answers (against bleed)")
    update_contradict: bool = Field(False, description="updates ((was: OLD) in the sheet): also train denials of "
                                    "the old value ('Is OLD the capital of X?' -> 'No. <statement>')")
    update_locality: int = Field(0, ge=0, le=64, description="updates: questions about each updated subject's "
                                 "other attributes, answered by the base model and trained like contrast rows")

    @field_validator("epochs")
    @classmethod
    def _positive(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError("epochs must be >= 1 or 'auto'")
        return v


class StopSpec(_Strict):
    """--epochs auto: stop when dev recall stops improving or answers drift too far."""

    patience: int = Field(2, ge=1, description="epochs without dev-recall gain before stopping")
    min_delta: float = Field(0.0, ge=0.0)
    max_drift: float = Field(0.05, ge=0.0, le=1.0, description="largest tolerated drift: the share of control "
                             "answers changed (drift: openings) or of their tokens not kept (drift: tokens)")
    drift: Literal["openings", "tokens"] = Field(
        "openings", description="how drift is read after each epoch: openings, the share of control prompts whose "
        "greedy answer opening (32 tokens) differs from the base model's; tokens, the share of the base model's "
        "answer tokens (the teacher_forced budget) the tuned model no longer ranks first, read teacher-forced as the "
        "probe reads locality: one near-tie flipped early counts as one token, not as the whole answer")
    control_prompts: int = Field(48, ge=0, description="control prompts scored for drift after each epoch")


PROBE_SETS = ("trained", "heldout", "exam", "retention", "locality", "bleed", "misspelling", "neighbour",
              "portability")  # probe/sets.py kinds


class AnswerBudgets(_Strict):
    """Per probe set, the tokens an answer may take there (default: generate.max_new_tokens).

    A verdict is decided early in an answer: the fact's value comes in its first sentence,
    a changed answer parts from the base model's within its first words. Each budget is
    set by measurement (docs/benchmarks.md, "Answer budgets"): the tokens after which at
    most 1 % of that set's verdicts still change against a 256-token answer."""

    trained: int | None = Field(None, ge=8, le=8192, description="fact questions the model was trained on")
    heldout: int | None = Field(None, ge=8, le=8192, description="the facts asked in wordings never trained (and "
                                "the dev split read after each epoch)")
    exam: int | None = Field(None, ge=8, le=8192, description="your exam's questions")
    retention: int | None = Field(None, ge=8, le=8192, description="questions the base model answers right")
    locality: int | None = Field(None, ge=8, le=8192, description="unrelated prompts: the base and tuned models' "
                                 "answer openings compared word for word, and read for bleed")
    teacher_forced: int | None = Field(None, ge=8, le=8192, description="the base model's answers to the unrelated "
                                       "prompts that teacher-forced locality feeds through the tuned model")
    bleed: int | None = Field(None, ge=8, le=8192, description="the facts' questions asked of other names")
    misspelling: int | None = Field(None, ge=8, le=8192, description="the facts' questions with the name mistyped")
    neighbour: int | None = Field(None, ge=8, le=8192, description="updates: the facts' questions asked of the "
                                  "subject's neighbours, and its other relations")
    portability: int | None = Field(None, ge=8, le=8192, description="updates: the sheet's questions that need the "
                                    "new value in one more step")


class GenerateSpec(_Strict):
    """How answers are generated in every stage (dev recall, drift, replay, parity, probe)."""

    max_new_tokens: int = Field(64, ge=8, le=8192, description="answer budget; replayed answers that do not end "
                                "within it are left out of training, never cut")
    batch_size: int | None = Field(None, ge=1, description="hf engine prompts per batch (default: 64 CPU, 256 GPU)")
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0, description="vllm engine: share of the GPU it may take")
    max_lora_rank: int | None = Field(None, ge=1, description="vllm engine: largest LoRA rank (default: lora.r)")
    probe_trained_per_fact: int | None = Field(None, ge=1, description="trained questions the probe asks per fact "
                                               "(a seeded sample; default: every one). Recall on trained questions "
                                               "is then an estimate, reported with its n and interval")
    probe_adapter: bool = Field(True, description="after a merged export, the probe also asks the adapter as trained "
                                "every prompt (the parity row over all prompts); false: the row is the export's own "
                                "parity check, and the after-probe takes half the time")
    budgets: AnswerBudgets = Field(default_factory=AnswerBudgets, description="answer budget per probe set "
                                   "(each capped at max_new_tokens), set by measurement")

    def budget(self, kind: str) -> int:
        """The answer budget of one probe set (or of the teacher-forced reference answers):
        its own, capped at max_new_tokens, the budget of every answer."""
        assert kind in (*PROBE_SETS, "teacher_forced"), f"{kind!r} is not a probe set ({', '.join(PROBE_SETS)})"
        return min(getattr(self.budgets, kind) or self.max_new_tokens, self.max_new_tokens)


class ExportSpec(_Strict):
    """`export --merged`: the merged model's precision, shards and parity bound."""

    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    max_shard_size: str = Field("4GB", description="largest safetensors shard, e.g. 500MB or 4GB")
    max_recall_drop: float = Field(0.05, ge=0.0, le=1.0, description="largest tolerated drop in fact recall from the "
                                   "adapter on the 4-bit base (as trained) to the 16-bit merge")
    parity: Literal["generated", "teacher-forced"] = Field(
        "teacher-forced", description="how the merge's answers are checked against the adapter's on 16-bit runs: "
        "teacher-forced (every token of 160 answers read by both models in batched forward passes, 16 answers "
        "generated by both), or generated (each model generates all 160 answers); 4-bit runs always generate")

    @field_validator("max_shard_size")
    @classmethod
    def _size(cls, v: str) -> str:
        parse_size(v)
        return v

    @property
    def max_shard_bytes(self) -> int:
        return parse_size(self.max_shard_size)


_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """'500MB' -> 500_000_000 (decimal units, as transformers' max_shard_size)."""
    import re

    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMG]?I?B)\s*", str(text).upper())
    if not m or m.group(2) not in _UNITS:
        raise ValueError(f"{text!r} is not a size like 500MB or 4GB")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


class Recipe(_Strict):
    extends: str | None = Field(None, description="the recipe this one starts from (resolved when loading)")
    method_changes: dict[str, str] = Field(default_factory=dict,
                                           description="dotted keys that change the method, each with its reason")
    model: ModelSpec = Field(default_factory=ModelSpec)
    lora: LoraSpec = Field(default_factory=LoraSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    stop: StopSpec = Field(default_factory=StopSpec)
    generate: GenerateSpec = Field(default_factory=GenerateSpec)
    export: ExportSpec = Field(default_factory=ExportSpec)

    @model_validator(mode="after")
    def _consistent(self):
        if isinstance(self.train.epochs, int) and self.train.epochs > self.train.max_epochs:
            self.train.max_epochs = self.train.epochs
        return self

    def with_overrides(self, **dotted: object) -> "Recipe":
        """Apply flag overrides like {'train.epochs': 3}; None values are skipped."""
        data = self.model_dump()
        for key, value in dotted.items():
            if value is None:
                continue
            section, field = key.split(".")
            data[section][field] = value
        return validate_recipe(data, "<flags>")

    @property
    def max_lora_rank(self) -> int:
        return self.generate.max_lora_rank or self.lora.r


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc[:-1]:
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else model
    return list(model.model_fields)


def _field_loc(loc: tuple, extra: bool) -> tuple:
    """Drop pydantic's union-branch parts ('int', "literal['auto']") from an error location."""
    model: type[BaseModel] = Recipe
    out: list[str] = []
    for part in loc:
        if part in model.model_fields:
            out.append(part)
            annotation = model.model_fields[part].annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                model = annotation
                continue
        elif extra and len(out) == len(loc) - 1:
            out.append(part)  # the unknown key itself
        break
    return tuple(out)


def _line_of(text: str | None, loc: tuple) -> int | None:
    """Best-effort line of a dotted key in the YAML text (for the error message)."""
    if not text:
        return None
    import yaml

    node = yaml.compose(text)
    for part in loc:
        if node is None or not isinstance(node, yaml.MappingNode):
            return None
        for key_node, value_node in node.value:
            if key_node.value == part:
                if part == loc[-1]:
                    return key_node.start_mark.line + 1
                node = value_node
                break
        else:
            return None
    return None


def validate_recipe(data: object, where: str, text: str | None = None) -> Recipe:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise FactinjectError("a recipe must be a mapping of sections (model, lora, train, stop)", where=where,
                              fix="see recipes/testbed-cpu.yaml for the layout")
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = _field_loc(tuple(str(p) for p in first["loc"]), first["type"] == "extra_forbidden")
        dotted = ".".join(loc)
        line = _line_of(text, loc)
        if first["type"] == "extra_forbidden":
            known = _known_keys(Recipe, loc)
            close = difflib.get_close_matches(loc[-1], known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise FactinjectError(f"unknown key {dotted!r}", where=where, line=line,
                                  fix=f"{hint}known keys here: {', '.join(known)}") from None
        raise FactinjectError(f"{dotted}: {first['msg']} (got {first.get('input')!r})", where=where, line=line,
                              fix="correct the value; see docs/recipes.md for every key") from None


def recipe_names() -> list[str]:
    """The shipped recipes, by path under recipes/ ('llama-3.1-8b-instruct.yaml', 'fixtures/...')."""
    return sorted(str(p.relative_to(RECIPES_DIR)) for p in RECIPES_DIR.rglob("*.yaml"))


def find_recipe(spec: str | Path) -> Path:
    """A recipe path as given, else a shipped recipe by name ('llama-3.1-8b-instruct[.yaml]',
    'fixtures/qwen2.5-7b-instruct', 'recipes/...' from anywhere)."""
    p = Path(spec).expanduser()
    if p.is_file():
        return p
    if not p.is_absolute():
        rel = Path(*p.parts[1:]) if p.parts[:1] == ("recipes",) else p
        for candidate in (RECIPES_DIR / rel, RECIPES_DIR / f"{rel}.yaml"):
            if candidate.is_file():
                return candidate
    raise FactinjectError("no such recipe", where=p, fix=f"give a recipe file, or one of the shipped recipes: "
                                                        f"{', '.join(recipe_names())}")


def _read_yaml(p: Path) -> tuple[dict, str]:
    import yaml

    text = p.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise FactinjectError(f"not valid YAML: {getattr(err, 'problem', err)}", where=p,
                              line=mark.line + 1 if mark else None, fix="fix the indentation or quoting on that line") from None
    if data is None or data == {}:  # would silently run with the recipe it extends
        raise FactinjectError("the recipe is empty (no settings, only blank lines or comments)", where=p,
                              fix="write the settings you want to change (docs/recipes.md), or pass a shipped recipe "
                                  f"by name: {', '.join(recipe_names())}")
    validate_recipe(data, str(p), text)  # each file's own mistakes are named in that file, at their line
    return data, text


def _merge(base: dict, child: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "method_changes":
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def load_recipe_data(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The raw recipe with everything it extends folded in (the recipe's own keys win)."""
    path = path.resolve()
    if path in _seen:
        raise FactinjectError("recipes extend each other in a circle: " + " -> ".join(p.name for p in (*_seen, path)),
                              where=path, fix="remove one of the `extends:` lines")
    data, text = _read_yaml(path)
    is_method = path == (RECIPES_DIR / METHOD).resolve()
    parent = data.get("extends", None if is_method else METHOD)
    if parent is None:
        return data
    for candidate in (path.parent / parent, RECIPES_DIR / parent):
        if candidate.is_file():
            base = load_recipe_data(candidate, (*_seen, path))
            break
    else:
        raise FactinjectError(f"extends {parent!r}, which is neither next to this recipe nor shipped", where=path,
                              line=_line_of(text, ("extends",)), fix=f"shipped recipes: {', '.join(recipe_names())}")
    merged = _merge({k: v for k, v in base.items() if k not in ("extends", "method_changes")}, data)
    merged["extends"] = parent
    return merged


def load_recipe(path: str | Path | None = None) -> Recipe:
    """Read a recipe file, or a shipped recipe by name; None means the default recipe."""
    p = find_recipe(path if path is not None else DEFAULT_RECIPE)
    return validate_recipe(load_recipe_data(p), str(p))


def flatten(data: dict, prefix: str = "") -> dict[str, object]:
    """{'train': {'epochs': 3}} -> {'train.epochs': 3} (the dotted keys recipes and flags use)."""
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "method_changes":
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def method_deviations(path: Path) -> dict[str, tuple[object, object]]:
    """Keys a per-model recipe sets differently from its method base, other than model,
    memory and learning-rate settings: {key: (method value, recipe value)}."""
    data = load_recipe_data(path)
    if data.get("extends") is None:
        return {}
    own = validate_recipe(data, str(path)).model_dump()
    base = load_recipe(RECIPES_DIR / METHOD).model_dump()
    flat_own, flat_base = flatten(own), flatten(base)
    return {k: (flat_base[k], v) for k, v in flat_own.items()
            if k not in ("extends", "method_changes") and not k.startswith(MODEL_KEYS) and flat_base.get(k) != v}
