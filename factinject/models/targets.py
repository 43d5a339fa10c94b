"""The base model of a recipe as the stages load it: as trained, or in 16-bit.

The export's parity check and the probe both compare against the base in the same
16-bit precision as the merge (a pre-quantized 4-bit checkpoint dequantized on load,
or the 16-bit weights named in `model.merge_base`), so both build that model here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from factinject.engines.records import ModelUnderTest
from factinject.errors import FactinjectError
from factinject.models.base import (
    ModelRef,
    is_prequantized,
    resolve_base,
    resolve_model,
)
from factinject.models.checkpoint import check_weights_folder
from factinject.rundir.owned import read_export_marker


@dataclass(frozen=True)
class BaseWeights:
    trained: ModelRef  # what training loaded (model.name)
    source: ModelRef  # what the merge goes into: model.merge_base, else the same
    quantized_source: bool  # the source is a pre-quantized 4-bit checkpoint, dequantized on load

    def on_16bit_base(self, label: str, dtype: str, adapter: str | None = None) -> ModelUnderTest:
        """The base in 16-bit `dtype` (with `adapter` on top, and its tokenizer, when given)."""
        return ModelUnderTest(label, self.source.path, adapter, self.source.local,
                              load_in_4bit=self.quantized_source, dequantize=self.quantized_source, dtype=dtype,
                              tokenizer=adapter)


def base_weights(recipe) -> BaseWeights:
    """The base weights of `recipe` (a `factinject.recipe.Recipe`)."""
    trained = resolve_base(recipe.model)
    source = resolve_model(recipe.model.merge_base) if recipe.model.merge_base else trained
    return BaseWeights(trained, source, is_prequantized(source.path, source.local))


def check_merged_is_current(run, record, merged_dir: Path) -> None:
    """Never probe (or write as GGUF) a merge unless it was made from the adapter in the run (the
    export's own marker says from which, else the run's record of it), and its weights
    files are whole (headers and sizes: a second, not minutes into a probe)."""
    marker = read_export_marker(merged_dir)
    made_from = marker["adapter_files"] if marker else record.merged_export().adapter_files
    reexport = f"re-export it with `factinject export --run {run.path} --merged --force`, then probe again"
    if made_from != record.train.adapter_files:
        raise FactinjectError("the merged export was made from an earlier adapter than the one in the run (stale)",
                              where=merged_dir, fix=reexport)
    check_weights_folder(merged_dir, fix=reexport)
