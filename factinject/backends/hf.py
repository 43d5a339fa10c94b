"""The hf engine: transformers + PEFT + TRL (+ bitsandbytes for 4-bit), CPU or CUDA.

Entry points, each run in a job's child process (engines/process.py) on a JSON job:
  train          LoRA on a 16-bit base, or QLoRA on a 4-bit NF4 base (quantized on load,
                 or a pre-quantized -bnb-4bit checkpoint); the baseline Unsloth is measured against
  merge          the adapter merged into 16-bit weights, shard by shard (merge.py)
  generate       greedy answers of one model (base, base + adapter, or a merged export)
  generate_each  several of those in turn, one model loaded at a time
  parity         answers of several models to the same prompts, one model at a time; the
                 first two compared token by token, and the merged weights against PEFT's merge
  export         merge, then parity, in one process
  agreement      teacher-forced locality: the base model's answers through the adapter's
                 model with the adapter on and off
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from factinject.backends.hf_generate import AGREEMENT_BATCH
from factinject.engines.records import (
    AgreementJob,
    GenerateJob,
    Load,
    MergeJob,
    ModelUnderTest,
    ParityJob,
    TrainJob,
)
from factinject.errors import FactinjectError
from factinject.progress import counter
from factinject.recipe import Recipe


def train(data: dict) -> dict:
    import torch

    from factinject.backends.loading import cpu_autocast_dtype, load_model, torch_dtype
    from factinject.backends.sft import run_sft
    from factinject.models.base import ModelRef, model_identity

    job = TrainJob.from_dict(data)
    recipe = Recipe.model_validate(job.recipe)
    torch.manual_seed(recipe.train.seed)
    target = ModelUnderTest("base", job.model_path, local=job.model_local, load_in_4bit=recipe.model.load_in_4bit,
                            dtype=recipe.model.dtype)
    load = Load(device=recipe.model.device, chat_template=job.chat_template, trust_remote_code=job.trust_remote_code,
                allow_pickle=job.allow_pickle)
    model, tokenizer, device = load_model(target, load)
    if getattr(model, "is_loaded_in_4bit", False):
        from peft import prepare_model_for_kbit_training

        keep_4bit_layout_for_training(model)

        # QLoRA as published: norms in float32, inputs that carry gradients, and on a GPU
        # gradient checkpointing (the activations of a 7-8B model would not fit 24 GB).
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=device == "cuda")
    identity = model_identity(ModelRef(job.model_name, job.model_path, job.model_local), tokenizer)
    # Mixed precision on a GPU as the recipe says; on a CPU the weights stay in the dtype
    # they were loaded in, the step's products in bfloat16 where train.cpu_autocast says.
    compute = torch_dtype(recipe.model.dtype, device) if device == "cuda" else torch.float32
    autocast = cpu_autocast_dtype(recipe.train.cpu_autocast, recipe.model.load_in_4bit) if device == "cpu" else None
    result = run_sft(job, model, tokenizer, engine="hf", base_identity=identity, use_cpu=device == "cpu",
                     bf16=compute == torch.bfloat16, fp16=compute == torch.float16, cpu_autocast=autocast)
    return asdict(result)


def keep_4bit_layout_for_training(model) -> None:
    """On a CPU with AVX-512 BF16, bitsandbytes repacks a 4-bit layer's weights for a faster
    inference kernel the first time the layer runs in eval mode, and keeps them repacked.
    That kernel has no backward pass, so training after the per-epoch evaluation would run
    on it. Training jobs therefore keep the standard layout throughout."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def _batch_size(job_batch: int | None, device: str) -> int:
    # Large on a GPU (halved on out-of-memory), moderate on a CPU where bigger batches
    # stop paying once both cores are busy.
    return job_batch or (256 if device == "cuda" else 64)


def _answer(model, tokenizer, questions: list[str], max_new_tokens: int | list[int], batch_size: int, label: str,
            token_ids: list | None = None):
    """(answers, finished), the batch halved on out-of-memory (accelerate's rule: GPU and
    CPU allocator failures alike), with a progress bar; one answer budget for all
    questions, or one per question."""
    from accelerate.utils import find_executable_batch_size

    from factinject.backends.hf_generate import generate

    chats = [[{"role": "user", "content": q}] for q in questions]
    with counter(f"[bold]probe[/] {label}", len(chats)) as bar:
        size = batch_size

        def halved() -> int:
            nonlocal size
            size //= 2
            bar.reset()
            return size

        @find_executable_batch_size(starting_batch_size=batch_size, reduce_batch_size_fn=halved)
        def answer(batch: int):
            return generate(model, tokenizer, chats, batch_size=batch, max_new_tokens=max_new_tokens,
                            progress=bar.advance, token_ids=token_ids)

        return answer()


def generate(data: dict) -> dict:
    from factinject.backends.loading import base_answer_cache, load_model
    from factinject.models.answer_cache import cached_generate_budgeted

    job = GenerateJob.from_dict(data)
    started = time.perf_counter()
    times = {"load_seconds": 0.0, "generate_seconds": 0.0, "device": None}

    def cache_for(budget: int):
        return base_answer_cache(job.target, job.load, budget) if job.answer_cache else None

    def answer(prompts: list[str], budgets: list[int]):  # only what the cache lacks: no model loaded when it holds all
        model, tokenizer, times["device"] = load_model(job.target, job.load)
        loaded = time.perf_counter()
        times["load_seconds"] = round(loaded - started, 2)
        out = _answer(model, tokenizer, prompts, budgets, _batch_size(job.batch_size, times["device"]),
                      job.target.label)
        times["generate_seconds"] = round(time.perf_counter() - loaded, 2)
        return out

    answers, finished, cached = cached_generate_budgeted(cache_for, job.questions, job.budget_list(), answer)
    return {"answers": answers, "finished": finished, "cached": cached, **times}


def generate_each(data: dict) -> dict:
    """Several generate jobs in turn in this one process, one model loaded at a time
    (saves starting a process per model when a probe needs base, adapter and merge)."""
    from factinject.backends.loading import release

    results = []
    for job in data["jobs"]:
        results.append(generate(job))
        release()
    return {"results": results}


def export(data: dict) -> dict:
    """The merge, then the parity check of what it wrote: one process for the whole export."""
    merged = merge(data["merge"])
    return {"merge": merged, "parity": parity(data["parity"])}


def agreement(data: dict) -> dict:
    """Per answer of the base model: its tokens, how many of them the tuned model still
    ranks first where the base model does, and the KL divergence of the tuned model's
    next-token distribution from the base model's, summed over those tokens (nats).

    Teacher-forced, as KnowEdit measures locality: each position sees the base answer's
    own prefix, so one near-tie flipped early in a long answer counts as one token, not
    as the whole answer (greedy answers compared word for word would count it so). Both
    distributions come from one model, the adapter switched off for the base, so an
    adapter that changes nothing scores every token and a KL of zero."""
    from factinject.backends.hf_generate import answer_sequences, teacher_forced_batched
    from factinject.backends.loading import load_model

    job = AgreementJob.from_dict(data)
    model, tokenizer, _ = load_model(job.target, job.load)
    assert hasattr(model, "disable_adapter"), "agreement needs an adapter's model: the base is that adapter switched off"
    sequences = answer_sequences(tokenizer, job.questions, job.answers)
    results: list[dict | None] = [None] * len(sequences)
    chunk = AGREEMENT_BATCH * 4  # tuned and base logits of a chunk held at once, never of all answers
    with counter(f"[bold]probe[/] {job.target.label}, teacher-forced", len(sequences)) as bar:
        for start in range(0, len(sequences), chunk):
            part = sequences[start:start + chunk]
            tuned = {i: logits for i, logits, _ in teacher_forced_batched(model, part, AGREEMENT_BATCH)}
            with model.disable_adapter():
                base = {i: logits for i, logits, _ in teacher_forced_batched(model, part, AGREEMENT_BATCH)}
            for i, (prompt, answer) in enumerate(part):
                t, b = tuned[i].log_softmax(-1), base[i].log_softmax(-1)
                agree_at = t.argmax(-1) == b.argmax(-1)
                kl_at = (b.exp() * (b - t)).sum(-1).clamp_min(0)
                result = {"tokens": len(answer), "agree": int(agree_at.sum()), "kl": float(kl_at.sum())}
                if job.per_token:
                    result.update(agree_at=agree_at.int().tolist(), kl_at=[round(v, 7) for v in kl_at.tolist()])
                results[start + i] = result
            bar.advance(len(part))
    return {"results": results}


TOP_K = 8  # logits compared per position: the tokens greedy decoding could pick


def parity(data: dict) -> dict:
    """Answers of each target in turn (never two loaded at once). The first two are then
    compared token by token on the first one's answers (teacher-forced): the largest
    difference of the first model's top-8 logits at any answer position, and, for each
    answer where greedy decoding went apart, where and by how small a margin."""
    import torch

    from factinject.backends.hf_generate import teacher_forced_in_order
    from factinject.backends.loading import load_model, release, resolve_device

    job = ParityJob.from_dict(data)
    if job.teacher_forced and len(job.targets) == 2:
        return forced_parity(job)
    answers: dict[str, list[str]] = {}
    first_top: list = []  # per prompt: (top-k values, top-k ids, target ids) of the first model
    first_sequences: list = []
    comparison: dict = {"max_logit_diff": None, "logit_scale": None, "divergences": []}
    compute = {}
    for i, target in enumerate(job.targets):
        if i < 2 and job.float32_on_cpu and resolve_device(job.load.device) == "cpu":
            target = replace(target, dtype="float32")
        model, tokenizer, device = load_model(target, job.load)
        compute[target.label] = str(model.dtype).removeprefix("torch.")
        sequences: list = []
        answers[target.label], _ = _answer(model, tokenizer, job.questions, job.budget_list(),
                                           _batch_size(job.batch_size, device), target.label,
                                           token_ids=sequences if i == 0 else None)
        if i < 2:
            if i == 0:
                first_sequences = sequences  # the first model's own tokens, forced through both
            forced = teacher_forced_in_order(model, first_sequences, AGREEMENT_BATCH)
            if i == 0:
                first_top = [(*torch.topk(logits, min(TOP_K, logits.shape[-1]), dim=-1), targets)
                             for logits, targets in forced]
                comparison["logit_scale"] = max((v.abs().max().item() for v, _, _ in first_top if v.numel()),
                                                default=0.0)
                if job.merged_dir:
                    comparison["weights"] = compare_weights(model.merge_and_unload(), Path(job.merged_dir))
            else:
                comparison.update(_compare(first_top, forced))
        del model
        release()
    return {"answers": answers, "compute_dtype": compute, **comparison}


def forced_parity(job: ParityJob) -> dict:
    """The adapter on the 16-bit base against the merge, without each generating every answer.

    Both models read the same answers in one forward pass each, and must rank first the
    same token at every position: then greedy decoding, which follows that token, gives
    the same answer along that path. The answers are the base model's own answers to the
    probe's prompts where the answer cache holds them (no generation at all), else the
    adapter's; the first `sample` prompts are generated by both (the visible check, which
    also runs the merge's own tokenizer and generation config), and any prompt where the
    two part is generated by the merge, for the report. Returns what `parity` returns, with
    `questions` (the prompts compared, in order) and `method` (how many of each)."""
    import torch

    from factinject.backends.hf_generate import stop_ids, teacher_forced_in_order
    from factinject.backends.loading import base_answer_cache, load_model, release, resolve_device
    from factinject.models.chat import encode_for_training

    budget_of = {**job.base_budget_of(), **dict(zip(job.questions, job.budget_list()))}
    stored: dict[str, tuple[str, bool]] = {}
    for budget in dict.fromkeys(budget_of.values()) if job.base else ():
        stored.update(base_answer_cache(job.base, job.load, budget).get(
            [q for q in job.questions if budget_of[q] == budget]))
    sample = list(dict.fromkeys(job.questions))[:job.sample]
    cached = [q for q in dict.fromkeys(job.questions) if q not in sample and stored.get(q, ("", False))[0].strip()]
    cached = cached[:max(0, job.max_prompts - len(sample))]
    others = [q for q in dict.fromkeys(job.questions) if q not in sample and q not in cached]
    own = sample + others[:max(0, job.max_prompts - len(sample) - len(cached))]  # the adapter's own answers
    questions = own + cached
    answers: dict[str, list[str]] = {}
    compute, comparison, first_top, sequences = {}, {}, [], []
    first, second = (replace(t, dtype="float32") if job.float32_on_cpu and resolve_device(job.load.device) == "cpu"
                     else t for t in job.targets)
    model, tokenizer, device = load_model(first, job.load)
    compute[first.label] = str(model.dtype).removeprefix("torch.")
    batch = _batch_size(job.batch_size, device)
    generated, _ = _answer(model, tokenizer, own, [budget_of[q] for q in own], batch, first.label,
                           token_ids=sequences)
    stops = set(stop_ids(model, tokenizer))
    for q in cached:  # the stored answer up to and with its end-of-turn token, as generation would stop
        ids, mask = encode_for_training(tokenizer, [{"role": "user", "content": q},
                                                    {"role": "assistant", "content": stored[q][0]}])
        split = mask.index(1)
        answer = ids[split:]
        end = next((i + 1 for i, t in enumerate(answer) if t in stops), len(answer)) if stored[q][1] else len(answer)
        sequences.append((ids[:split], answer[:end]))
    answers[first.label] = generated + [stored[q][0] for q in cached]
    with counter(f"[bold]parity[/] {first.label}, teacher-forced", len(sequences)) as bar:
        forced = teacher_forced_in_order(model, sequences, AGREEMENT_BATCH)
        bar.advance(len(sequences))
    first_top = [(*torch.topk(logits, min(TOP_K, logits.shape[-1]), dim=-1), targets) for logits, targets in forced]
    comparison["logit_scale"] = max((v.abs().max().item() for v, _, _ in first_top if v.numel()), default=0.0)
    if job.merged_dir:
        comparison["weights"] = compare_weights(model.merge_and_unload(), Path(job.merged_dir))
    del model, forced
    release()
    model, tokenizer, device = load_model(second, job.load)
    compute[second.label] = str(model.dtype).removeprefix("torch.")
    with counter(f"[bold]parity[/] {second.label}, teacher-forced", len(sequences)) as bar:
        forced = teacher_forced_in_order(model, sequences, AGREEMENT_BATCH)
        bar.advance(len(sequences))
    comparison.update(_compare(first_top, forced, against_first_choice=True))
    parted = sorted({d["index"] for d in comparison["divergences"]} | set(range(len(sample))))
    own_answers, _ = _answer(model, tokenizer, [questions[i] for i in parted],
                             [budget_of[questions[i]] for i in parted], batch, second.label)
    mine = dict(zip(parted, own_answers))
    answers[second.label] = [mine.get(i, text) for i, text in enumerate(answers[first.label])]
    del model
    release()
    comparison["method"] = {"teacher_forced": len(sequences), "tokens": sum(len(a) for _, a in sequences),
                            "from_answer_cache": len(cached), "generated_by_both": len(sample)}
    return {"answers": answers, "questions": questions, "compute_dtype": compute, **comparison}


def compare_weights(reference, merged_dir: Path) -> dict:
    """Each tensor of the merged export against `reference` (PEFT's merge_and_unload of the
    same adapter on the same base, cast to the export's dtype), in units of the export
    dtype's precision: 1 means the two differ at most in the last bit (the two merges
    round once or twice)."""
    import torch

    from factinject.models.checkpoint import Checkpoint

    exported = Checkpoint(merged_dir)
    state = reference.state_dict()
    worst, worst_key = 0.0, None
    for key in exported.keys():
        ours = exported.read(key)
        theirs = state[key].detach().to("cpu", ours.dtype)
        if not ours.is_floating_point():
            assert torch.equal(ours, theirs), key
            continue
        eps = torch.finfo(ours.dtype).eps
        a, b = ours.float(), theirs.float()
        scale = torch.maximum(a.abs(), b.abs()).clamp_min(torch.finfo(ours.dtype).tiny)
        ulps = ((a - b).abs() / (eps * scale)).max().item()
        if ulps > worst:
            worst, worst_key = ulps, key
    return {"max_ulps": worst, "worst_tensor": worst_key, "tensors": len(exported.keys()),
            "reference": "peft merge_and_unload"}


def _compare(first_top: list, second: list, against_first_choice: bool = False) -> dict:
    """Largest top-k logit difference, and for each prompt where the second model's greedy
    choice leaves the first model's answer (or, `against_first_choice`, where it differs from
    the first model's own first choice on a path neither need have taken): the position and
    both models' margins."""
    worst, divergences = 0.0, []
    for index, ((values, ids, targets), (logits, _)) in enumerate(zip(first_top, second)):
        if not len(targets) or not values.numel():
            continue
        if against_first_choice:
            targets = ids[:, 0].tolist()
        worst = max(worst, (logits.gather(-1, ids) - values).abs().max().item())
        chosen = logits.argmax(-1).tolist()
        position = next((p for p, (c, t) in enumerate(zip(chosen, targets)) if c != t), None)
        if position is None:
            continue
        wanted, picked = targets[position], chosen[position]
        row_ids = ids[position].tolist()
        first_gap = (values[position, 0] - values[position, row_ids.index(picked)]).item() \
            if picked in row_ids else None  # None: not even among the first model's top-8
        second_gap = (logits[position, picked] - logits[position, wanted]).item()
        divergences.append({"index": index, "position": position, "margin_first": first_gap,
                            "margin_second": second_gap})
    return {"max_logit_diff": worst, "divergences": divergences}


def merge(data: dict) -> dict:
    """Merged 16-bit weights, the training tokenizer and a generation config, into the job's `out`."""
    from transformers import GenerationConfig

    from factinject.backends.hf_generate import stop_ids
    from factinject.backends.merge import merge_checkpoint
    from factinject.models.base import ModelRef, load_tokenizer, quiet_libraries

    quiet_libraries()
    job = MergeJob.from_dict(data)
    out = Path(job.out)
    base_dir = local_weights(job.base, job.base_local)
    tokenizer = load_tokenizer(ModelRef("adapter", job.adapter, True), chat_template=job.chat_template)
    tokenizer.save_pretrained(str(out))
    before = reset_peak_rss()  # libraries are loaded by now: what follows is the merge's own memory
    with _tensor_progress(base_dir) as advance:
        record = merge_checkpoint(base_dir, Path(job.adapter), out, dtype=job.dtype,
                                  max_shard_bytes=job.max_shard_bytes, progress=advance)
    record["rss_before_bytes"], record["peak_rss_bytes"] = before, peak_rss_bytes()
    try:
        generation = GenerationConfig.from_pretrained(str(base_dir))
    except OSError:
        generation = GenerationConfig()

    class _Model:  # stop_ids reads the model's generation config
        generation_config = generation

    eos = stop_ids(_Model, tokenizer)
    generation.eos_token_id = eos if len(eos) > 1 else eos[0]
    generation.pad_token_id = tokenizer.pad_token_id
    generation.do_sample = False
    for knob in ("temperature", "top_p", "top_k"):  # greedy: sampling knobs would only raise warnings
        setattr(generation, knob, None)
    generation.save_pretrained(str(out))
    return {**record, "eos_token_id": eos}


def local_weights(name: str, local: bool) -> Path:
    """A folder with the weights: the path itself, or the hub snapshot (the one training downloaded)."""
    if local:
        return Path(name)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.jinja"]))
    except Exception as err:  # noqa: BLE001 - the hub client raises many types
        raise FactinjectError(f"could not get the weights of {name!r} to merge into: {str(err).splitlines()[0]}",
                              where=name, fix="check your network (or HF_HUB_OFFLINE), or set model.merge_base to a "
                                              "local folder") from None


@contextlib.contextmanager
def _tensor_progress(base_dir: Path):
    """A bar over the tensors the merge writes; yields the merge's per-tensor callback."""
    from factinject.models.checkpoint import Checkpoint

    with counter("[bold]merge[/] tensors", len(Checkpoint(base_dir).output_keys())) as bar:
        yield lambda key: bar.advance()


def _status(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> int | None:
    """Start measuring the peak resident memory from now (Linux); return the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass
    return _status("VmRSS")


def peak_rss_bytes() -> int:
    """Peak resident memory since reset_peak_rss (Linux), else since the process started."""
    peak = _status("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB
