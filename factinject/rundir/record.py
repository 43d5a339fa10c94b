"""The run record: manifest.json read and written through typed sections.

Each stage owns one section (`expand`, `train`, `export`, `probe`, `chat_template`)
and writes it whole with `Run.write_section`; readers get the sections as typed
objects from `Run.record()` instead of walking nested dicts. A section is written
back exactly as it was read: keys it does not name (from a newer or older
factinject) are kept, so the file format is the one documented in docs/design.md.
A section missing a key it needs is a clear error, not a KeyError deep in a stage.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from factinject.errors import FactinjectError


@dataclass(kw_only=True)
class Section:
    """One stage's part of the manifest."""

    name: ClassVar[str]
    optional: ClassVar[tuple[str, ...]] = ()  # keys written only when set (newer than the section)
    extra: dict = field(default_factory=dict, repr=False, compare=False)  # keys this version does not name

    @classmethod
    def from_dict(cls, data: dict, where: Path | None = None):
        if not isinstance(data, dict):
            raise FactinjectError(f"the manifest's {cls.name!r} section is not an object", where=where,
                                  fix=f"re-run the stage that writes it (`factinject {cls.name}`), or restore the file")
        missing = [f.name for f in fields(cls) if _required(f) and f.name not in data]
        if missing:
            raise FactinjectError(f"the manifest's {cls.name!r} section lacks {', '.join(missing)}", where=where,
                                  fix=f"re-run the stage that writes it (`factinject {cls.name}`) with this factinject")
        named = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in named},
                   extra={k: v for k, v in data.items() if k not in named})

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name != "extra" and not (f.name in self.optional and getattr(self, f.name) is None)}
        return {**out, **self.extra}


def _required(f) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


@dataclass(kw_only=True)
class ExpandRecord(Section):
    name: ClassVar[str] = "expand"
    sheets: list[dict] = field(default_factory=list)  # path, sha256, facts
    config: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)  # facts, train, dev, test
    files: dict[str, str]  # data/<split>.jsonl -> sha256
    facts: dict[str, dict]  # fact id -> subject, aliases, relation, statement, answer_key, ...

    @property
    def sheet_paths(self) -> list[str]:
        return [s["path"] for s in self.sheets]


@dataclass(kw_only=True)
class TrainRecord(Section):
    name: ClassVar[str] = "train"
    optional: ClassVar[tuple[str, ...]] = ("compute",)
    backend: str
    recipe: dict  # the resolved recipe it was trained with
    base_model: dict  # name, path, chat_template_sha256, eos_token, weights fingerprint
    best_epoch: int
    stop_reason: str = None
    curve: list[dict] = None  # one EpochRecord per epoch
    rows: dict = None
    adapter_files: dict[str, str]
    seconds: float = None
    seed: int = None
    versions: dict = field(default_factory=dict)
    compute: str | None = None  # the training step's arithmetic (TrainResult.compute)

    def trained_recipe(self):
        """The recipe as trained (a `factinject.recipe.Recipe`)."""
        # Imported here: the schema pulls in pydantic, and `factinject --help` and `expand`
        # read run folders without needing it.
        from factinject.recipe import Recipe

        return Recipe.model_validate(self.recipe)


@dataclass(kw_only=True)
class MergedExport(Section):
    name: ClassVar[str] = "export"
    optional: ClassVar[tuple[str, ...]] = ("adapter_files",)
    path: str
    files: dict[str, str]
    parity: dict  # exactness and quantization figures
    chat_template_sha256: str = None
    eos_token_id: Any = None
    dtype: str
    shards: list = None
    total_size: int = None
    merged_from: dict = None
    memory: dict = None
    adapter_files: dict[str, str] | None = None  # the adapter it was merged from (TrainRecord.adapter_files)


@dataclass(kw_only=True)
class ExportRecord(Section):
    name: ClassVar[str] = "export"
    optional: ClassVar[tuple[str, ...]] = ("gguf",)
    adapter: dict | None = None  # path, files: the adapter exported as a folder
    merged: MergedExport | None = None
    gguf: dict | None = None  # per GGUF type: path, files, the adapter it came from, bytes, seconds

    @classmethod
    def from_dict(cls, data: dict, where: Path | None = None):
        section = super().from_dict(data, where)
        if section.merged is not None:
            section.merged = MergedExport.from_dict(section.merged, where)
        return section

    def to_dict(self) -> dict:
        out = {}
        if self.adapter is not None:
            out["adapter"] = self.adapter
        if self.merged is not None:
            out["merged"] = self.merged.to_dict()
        if self.gguf is not None:
            out["gguf"] = self.gguf
        return {**out, **self.extra}


@dataclass(kw_only=True)
class ProbeRecord(Section):
    name: ClassVar[str] = "probe"
    optional: ClassVar[tuple[str, ...]] = ("adapter_files",)
    report: str = None
    tuned: str | None = None
    backend: str = None
    exam: list = field(default_factory=list)
    after: dict | None = None
    before: dict = None
    seconds: float = None
    adapter_files: dict[str, str] | None = None  # the adapter the report's "after" comes from, if any


@dataclass(kw_only=True)
class ChatTemplateRecord(Section):
    name: ClassVar[str] = "chat_template"
    source: str = None  # 'default' or the file given with --chat-template
    sha256: str = None
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
