"""The run record: manifest.json read and written through typed sections.

Each stage owns one section (`expand`, `train`, `export`, `probe`, `chat_template`)
and writes it whole with `Run.write_section`; readers get the sections as typed
objects from `Run.record()` instead of walking nested dicts. A section is written
back exactly as it was read: keys it does not name (from a newer or older
factinject) are kept, so the file format is the one documented in docs/design.md.
A section missing a key it needs, or holding a value of the wrong type, is a clear
error naming the manifest and the key, not a KeyError or TypeError deep in a stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from factinject.errors import FactinjectError


class Section(BaseModel):
    """One stage's part of the manifest, checked on load: each named key must have its
    type (strictly: "3" is not an epoch), and keys this version does not name are kept."""

    model_config = ConfigDict(extra="allow", strict=True)
    name: ClassVar[str]
    optional: ClassVar[tuple[str, ...]] = ()  # keys written only when set (newer than the section)

    @classmethod
    def from_dict(cls, data: dict, where: Path | None = None):
        if not isinstance(data, dict):
            raise FactinjectError(f"the manifest's {cls.name!r} section is not an object", where=where,
                                  fix=f"re-run the stage that writes it (`factinject {cls.name}`), or restore the file")
        missing = [key for key, spec in cls.model_fields.items() if spec.is_required() and key not in data]
        if missing:
            raise FactinjectError(f"the manifest's {cls.name!r} section lacks {', '.join(missing)}", where=where,
                                  fix=f"re-run the stage that writes it (`factinject {cls.name}`) with this factinject")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            problem = err.errors()[0]
            at = ".".join(str(p) for p in problem["loc"])
            raise FactinjectError(
                f"the manifest's {cls.name!r} section has a bad {at}: {problem['msg'].lower()}, found "
                f"{problem['input']!r:.80}", where=where,
                fix=f"restore the file, or re-run the stage that writes it (`factinject {cls.name}`)") from None

    @property
    def extra(self) -> dict:
        """Keys this version does not name, as read."""
        return dict(self.model_extra or {})

    def to_dict(self) -> dict:
        out = {key: getattr(self, key) for key in type(self).model_fields
               if not (key in self.optional and getattr(self, key) is None)}
        return {**out, **self.extra}

    def replace(self, **changes):
        """A copy with `changes` (the section's own keys)."""
        unknown = set(changes) - set(type(self).model_fields)
        assert not unknown, f"{type(self).__name__} has no {sorted(unknown)}"
        return self.model_copy(update=changes)


class ExpandRecord(Section):
    name: ClassVar[str] = "expand"
    sheets: list[dict] = Field(default_factory=list)  # path, sha256, facts
    config: dict = Field(default_factory=dict)
    counts: dict = Field(default_factory=dict)  # facts, train, dev, test
    files: dict[str, str]  # data/<split>.jsonl -> sha256
    facts: dict[str, dict]  # fact id -> subject, aliases, relation, statement, answer_key, ...

    @property
    def sheet_paths(self) -> list[str]:
        return [s["path"] for s in self.sheets]


class TrainRecord(Section):
    name: ClassVar[str] = "train"
    optional: ClassVar[tuple[str, ...]] = ("compute",)
    backend: str
    recipe: dict  # the resolved recipe it was trained with
    base_model: dict  # name, path, chat_template_sha256, eos_token, weights fingerprint
    best_epoch: int
    stop_reason: str | None = None
    curve: list[dict] | None = None  # one EpochRecord per epoch
    rows: dict | None = None
    adapter_files: dict[str, str]
    seconds: float | None = None
    seed: int | None = None
    versions: dict = Field(default_factory=dict)
    compute: str | None = None  # the training step's arithmetic (TrainResult.compute)

    def trained_recipe(self):
        """The recipe as trained (a `factinject.recipe.Recipe`)."""
        from factinject.recipe import Recipe  # here: the recipe schema imports the engine table

        return Recipe.model_validate(self.recipe)


class MergedExport(Section):
    name: ClassVar[str] = "export"
    optional: ClassVar[tuple[str, ...]] = ("adapter_files",)
    path: str
    files: dict[str, str]
    parity: dict  # exactness and quantization figures
    chat_template_sha256: str | None = None
    eos_token_id: Any = None
    dtype: str
    shards: list | None = None
    total_size: int | None = None
    merged_from: dict | None = None
    memory: dict | None = None
    adapter_files: dict[str, str] | None = None  # the adapter it was merged from (TrainRecord.adapter_files)


class ExportRecord(Section):
    name: ClassVar[str] = "export"
    optional: ClassVar[tuple[str, ...]] = ("gguf",)
    adapter: dict | None = None  # path, files: the adapter exported as a folder
    merged: MergedExport | None = None
    gguf: dict | None = None  # per GGUF type: path, files, the adapter it came from, bytes, seconds

    @classmethod
    def from_dict(cls, data: dict, where: Path | None = None):
        if isinstance(data, dict) and isinstance(data.get("merged"), dict):  # its own checks and messages
            data = {**data, "merged": MergedExport.from_dict(data["merged"], where)}
        return super().from_dict(data, where)

    def to_dict(self) -> dict:
        out = {}
        if self.adapter is not None:
            out["adapter"] = self.adapter
        if self.merged is not None:
            out["merged"] = self.merged.to_dict()
        if self.gguf is not None:
            out["gguf"] = self.gguf
        return {**out, **self.extra}


class ProbeRecord(Section):
    name: ClassVar[str] = "probe"
    optional: ClassVar[tuple[str, ...]] = ("adapter_files",)
    report: str | None = None
    tuned: str | None = None
    backend: str | None = None
    exam: list = Field(default_factory=list)
    after: dict | None = None
    before: dict | None = None
    seconds: float | None = None
    adapter_files: dict[str, str] | None = None  # the adapter the report's "after" comes from, if any


class ChatTemplateRecord(Section):
    name: ClassVar[str] = "chat_template"
    source: str | None = None  # 'default' or the file given with --chat-template
    sha256: str | None = None
    text: str


SECTIONS: dict[str, type[Section]] = {s.name: s for s in (ExpandRecord, TrainRecord, ExportRecord, ProbeRecord,
                                                          ChatTemplateRecord)}


@dataclass
class RunRecord:
    """The whole manifest: which stages have run, and what each recorded."""

    name: str | None = None
    factinject_version: str | None = None
    expand: ExpandRecord | None = None
    train: TrainRecord | None = None
    export: ExportRecord | None = None
    probe: ProbeRecord | None = None
    chat_template: ChatTemplateRecord | None = None

    @classmethod
    def from_dict(cls, data: dict, where: Path | None = None) -> "RunRecord":
        sections = {name: kind.from_dict(data[name], where) for name, kind in SECTIONS.items() if data.get(name)}
        return cls(name=data.get("name"), factinject_version=data.get("factinject_version"), **sections)

    def merged_export(self) -> MergedExport | None:
        return self.export.merged if self.export else None

    def stale_outputs(self) -> list[str]:
        """What was made from another adapter than the one trained last: the merged export,
        an adapter export, the probe report, each named for a message."""
        current = self.train.adapter_files if self.train else None
        found = []
        if self.export and self.export.merged and self.export.merged.adapter_files != current:
            found.append(f"the merged export in {self.export.merged.path}")
        if self.export and self.export.adapter and self.export.adapter.get("adapter_files") != current:
            found.append(f"the adapter export in {self.export.adapter['path']}")
        for qtype, g in sorted(((self.export.gguf or {}) if self.export else {}).items()):
            if g.get("adapter_files") != current:
                found.append(f"the GGUF export ({qtype}) in {g['path']}")
        if self.probe and self.probe.tuned and self.probe.adapter_files != current:
            found.append(f"the probe report ({self.probe.report})")
        return found

    def require_expand(self, where: Path) -> ExpandRecord:
        if not self.expand:
            raise FactinjectError("this run has no expand record in its manifest", where=where,
                                  fix="run `factinject expand facts/<sheet>.md --run <this run>`")
        return self.expand

    def require_train(self, where: Path) -> TrainRecord:
        if not self.train:
            raise FactinjectError("this run has no trained adapter", where=where,
                                  fix="run `factinject train` first (or pass --run)")
        return self.train
