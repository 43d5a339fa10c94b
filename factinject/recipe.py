"""Recipes: one validated YAML schema for how a run trains, stops and probes.

pydantic does the type checking (why a library: nested defaults, coercion and
precise error locations for free); this module adds what users need on top:
"did you mean" for unknown keys, and errors that name the file and the line.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from factinject.errors import FactinjectError

REPO_RECIPES = Path(__file__).resolve().parent.parent / "recipes"
TESTBED = "testbed"  # model name that means the embedded CPU testbed model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(_Strict):
    name: str = Field(TESTBED, description="'testbed', a hub id or a local path")
    backend: Literal["auto", "cpu", "unsloth"] = "auto"
    max_seq_length: int = Field(256, ge=16, le=131072)
    load_in_4bit: bool = True  # used by the unsloth backend only
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    allow_pickle: bool = False


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
    contrast_per_fact: int = Field(0, ge=0, le=256, description="the fact's questions asked about other names, "
                                   "answered with the base model's own answers (against bleed)")

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
    max_drift: float = Field(0.05, ge=0.0, le=1.0, description="largest tolerated share of changed control answers")
    control_prompts: int = Field(48, ge=0, description="control prompts scored for drift after each epoch")


class Recipe(_Strict):
    model: ModelSpec = Field(default_factory=ModelSpec)
    lora: LoraSpec = Field(default_factory=LoraSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    stop: StopSpec = Field(default_factory=StopSpec)

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


def load_recipe(path: str | Path | None) -> Recipe:
    """Read a recipe file (or the default recipe when path is None)."""
    import yaml

    if path is None:
        return Recipe()
    p = Path(path)
    if not p.exists():
        raise FactinjectError("no such recipe", where=p, fix=f"pick one of {sorted(x.name for x in REPO_RECIPES.glob('*.yaml'))}")
    text = p.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise FactinjectError(f"not valid YAML: {getattr(err, 'problem', err)}", where=p,
                              line=mark.line + 1 if mark else None, fix="fix the indentation or quoting on that line") from None
    return validate_recipe(data, str(p), text)
