"""GPU training backend: Unsloth `FastLanguageModel`, 4-bit base + LoRA, responses-only loss.

Runs in a child process (`python -m factinject.backends.unsloth_train JOB.json`) so
that all GPU memory is returned when training ends, and so that unsloth is imported
before trl/transformers/peft (it patches them at import time).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from factinject.errors import FactinjectError
from factinject.train import EpochRecord, TrainJob, TrainResult

OOM_EXIT = 3  # the child's exit code for CUDA out-of-memory


def train_in_child(job: TrainJob) -> TrainResult:
    from factinject.guard import OOM_TRAIN_FIX
    from factinject.models import supplied_template

    job_file = job.state_dir / "unsloth-job.json"
    result_file = job.state_dir / "unsloth-result.json"
    template_file = job.state_dir / "unsloth-chat-template.jinja"  # --chat-template, for a model that ships none
    result_file.unlink(missing_ok=True)
    template_file.unlink(missing_ok=True)
    if supplied_template() is not None:
        template_file.write_text(supplied_template(), encoding="utf-8")
    job_file.write_text(json.dumps(asdict(job)), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "factinject.backends.unsloth_train", str(job_file)])
    if proc.returncode in (130, -2):  # the child was interrupted (SIGINT): report it as our own Ctrl-C
        raise KeyboardInterrupt
    if proc.returncode == OOM_EXIT:
        raise FactinjectError("out of GPU memory while training (CUDA out of memory)", where=job.state_dir,
                              fix=OOM_TRAIN_FIX)
    if proc.returncode != 0 or not result_file.exists():
        raise FactinjectError(
            f"the Unsloth training process failed (exit code {proc.returncode})", where=job.state_dir,
            fix="read the output above; on CUDA out-of-memory lower train.batch_size or model.max_seq_length, "
                "then continue with `factinject train --resume`",
        )
    data = json.loads(result_file.read_text(encoding="utf-8"))
    data["curve"] = [EpochRecord(**r) for r in data["curve"]]
    return TrainResult(**data)


def _child(job_file: Path) -> None:
    import unsloth  # noqa: F401  - must precede trl/transformers/peft
    from unsloth import FastLanguageModel
    from unsloth.chat_templates import train_on_responses_only

    import torch

    from factinject.backends.hf_train import run_sft
    from factinject.chat import turn_markers
    from factinject.models import ModelRef, check_local_weights, model_identity, quiet_libraries

    quiet_libraries()
    job = TrainJob(**json.loads(job_file.read_text(encoding="utf-8")))
    recipe = job.recipe_obj()
    ref = ModelRef(job.model_name, job.model_path, local=Path(job.model_path).exists())
    check_local_weights(ref, allow_pickle=job.allow_pickle)
    try:
        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=job.model_path, max_seq_length=recipe.model.max_seq_length, dtype=None,
            load_in_4bit=recipe.model.load_in_4bit, trust_remote_code=job.trust_remote_code,
        )
    except torch.cuda.OutOfMemoryError:
        _oom()
    template_file = job.state_dir / "unsloth-chat-template.jinja"
    if not tokenizer.chat_template and template_file.exists():
        tokenizer.chat_template = template_file.read_text(encoding="utf-8")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    identity = model_identity(ref, tokenizer) if tokenizer.chat_template else {"name": job.model_name}
    if not tokenizer.chat_template:
        raise FactinjectError(f"the tokenizer of {job.model_name!r} has no chat template", where=job.model_path,
                              fix="use an instruct/chat model, or pass --chat-template default")
    instruction_part, response_part = turn_markers(tokenizer)

    def peft(model):
        return FastLanguageModel.get_peft_model(
            model, r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout,
            target_modules=list(recipe.lora.target_modules), bias="none",
            use_gradient_checkpointing="unsloth", random_state=recipe.train.seed,
        )

    # Base answers come from the model before LoRA is attached (run_sft does that
    # first); then the adapter goes on and training runs on the same code path as the
    # CPU backend, with Unsloth's responses-only masking instead of TRL's.
    FastLanguageModel.for_inference(model)
    try:
        result = run_sft(
            job, model, tokenizer, backend="unsloth", base_identity=identity, use_cpu=False,
            bf16=torch.cuda.is_bf16_supported(), to_inference=FastLanguageModel.for_inference,
            to_training=FastLanguageModel.for_training, peft_transform=peft, assistant_only_loss=False,
            trainer_hook=lambda tr: train_on_responses_only(tr, instruction_part=instruction_part,
                                                            response_part=response_part),
        )
    except torch.cuda.OutOfMemoryError:
        _oom()
    out = asdict(result)
    (job.state_dir / "unsloth-result.json").write_text(json.dumps(out), encoding="utf-8")


def _oom():
    raise SystemExit(OOM_EXIT)  # the parent prints the message (OOM_TRAIN_FIX)


if __name__ == "__main__":
    try:
        _child(Path(sys.argv[1]))
    except FactinjectError as err:
        print(f"error: {err.render()}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the parent prints the message
        raise SystemExit(130) from None
