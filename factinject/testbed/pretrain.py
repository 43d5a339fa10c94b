"""Pretrain the testbed Llama from scratch on the synthetic world, on the CPU.

`build(BuildConfig(...), out_dir, world_out)` is the whole pipeline: world ->
tokenizer -> conversations -> training -> safetensors + configs (+ world files).
Everything random is seeded, torch runs deterministic kernels on a fixed number of
threads, so the same config on the same machine gives the same weights. The world
and the tokenizer are pure functions of the seed, identical on any machine; weights
from another CPU (other kernels, other bf16 support) may differ in the last bits.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from factinject.testbed import tokenizer as tk
from factinject.testbed import world as W


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    heads: int
    ffn: int


# "default" is the committed model; "tiny" exists so tests can rebuild twice in seconds.
SHAPES = {
    "default": ModelShape(hidden=256, layers=4, heads=4, ffn=704),
    "tiny": ModelShape(hidden=32, layers=1, heads=2, ffn=64),
}


@dataclass(frozen=True)
class BuildConfig:
    seed: int = W.DEFAULT_SEED
    shape: str = "default"
    steps: int = 4000
    batch_size: int = 64  # conversations per step (~29 tokens each)
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.05
    vocab_size: int = 2048
    name_repeats: int = 4  # how often each name is in the tokenizer corpus (see tokenizer_corpus)
    loss_on: str = "all"  # "all" tokens (plain LM pretraining) or only "assistant" tokens
    system_share: float = 0.1  # conversations that start with a system prompt
    two_turn_share: float = 0.08  # conversations with an earlier exchange before the question
    chat_repeats: int = 6  # generic turns are few; repeat them so they are learned
    wrap_share: float = 0.2  # questions with a greeting before or a request after them
    threads: int = 1  # one thread: other jobs share the machine, and the weights depend on the thread count
    # Autocast matmuls to bfloat16 (weights and optimizer stay float32): 1.6x the
    # tokens/s of float32 on the 2-core AVX512-BF16 build machine.
    bf16: bool = True
    eval_limit: int = 400  # held-out questions scored at the end of the build (0: none)

    def __post_init__(self):
        assert self.shape in SHAPES, f"shape must be one of {sorted(SHAPES)}"
        assert self.loss_on in ("all", "assistant"), "loss_on is 'all' or 'assistant'"
        assert self.steps >= 1 and self.batch_size >= 1, "steps and batch_size must be positive"


# ------------------------------------------------------------------ data


def tokenizer_corpus(world: dict, chat_train: list[dict], unknown_train: list[dict], name_repeats: int) -> list[str]:
    """Text the BPE is trained on: sentence frames often, names rarely.

    Trained on the Q/A rows directly, every name appears ~30 times and becomes one
    token. Counting each name only `name_repeats` times splits names into syllable
    pieces, as a real tokenizer splits rare names: the model then learns to read
    multi-token names, which is what a new entity ("TinyLLM") will be.
    """
    frames = []
    for name, rel in W.RELATIONS.items():
        for text in W.wordings(name)[0] + rel.answers:  # trained wordings only: the unseen ones stay unseen
            filled = text.replace("{subject}", "").replace("{value}", "").replace("{article}", "a")
            frames.append(re.sub(r"\s+", " ", filled).strip())
    names = sorted({e["name"] for e in world["entities"]} | {v for e in world["entities"] for v in e["attributes"].values()})
    chat = [r["question"] for r in chat_train] + sorted({r["answer"] for r in chat_train}) + list(W.SYSTEM_PROMPTS)
    outside = [r["question"] for r in unknown_train if r["attribute"] == "outside"] + [W.UNKNOWN_ANSWER]
    return frames * 8 + names * name_repeats + chat * 2 + outside + list(_BEFORE + _AFTER) * 4


# Words people put around a question. Training some questions inside them teaches
# the model that they change nothing about the answer.
_BEFORE = ("Hi! ", "Hello. ", "Quick question: ", "Question for you: ", "Hey, ", "Sorry to bother you. ",
           "I was wondering about something. ", "One more thing. ")
_AFTER = (" Thanks!", " Please answer in one sentence.", " Just the answer, please.", " Thank you.")


def _wrap(question: str, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(_BEFORE) + question
    return question + rng.choice(_AFTER)


def conversations(train_rows: list[dict], chat_train: list[dict], unknown_train: list[dict],
                  cfg: BuildConfig) -> list[list[dict]]:
    """Training conversations: one per world and unknown row, generic turns repeated, a
    share with a system prompt or an earlier exchange so the template's variants are all seen."""
    rng = random.Random(cfg.seed + 1)
    rows = list(train_rows) + list(unknown_train) + [r for r in chat_train for _ in range(cfg.chat_repeats)]
    out = []
    for r in rows:
        question = _wrap(r["question"], rng) if rng.random() < cfg.wrap_share else r["question"]
        conv = [{"role": "user", "content": question}, {"role": "assistant", "content": r["answer"]}]
        if rng.random() < cfg.two_turn_share:
            prev = rng.choice(rows)
            conv = [{"role": "user", "content": prev["question"]}, {"role": "assistant", "content": prev["answer"]}] + conv
        if rng.random() < cfg.system_share:
            conv = [{"role": "system", "content": rng.choice(W.SYSTEM_PROMPTS)}] + conv
        out.append(conv)
    return out


def encode(tokenizer, convs: list[list[dict]], loss_on: str) -> list[tuple[list[int], list[int]]]:
    """(input_ids, loss_mask) per conversation, via the same chat template users get."""
    out = []
    for conv in convs:
        enc = tokenizer.apply_chat_template(conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        ids = list(enc["input_ids"])
        mask = list(enc["assistant_masks"]) if loss_on == "assistant" else [0] + [1] * (len(ids) - 1)
        assert any(mask), "a conversation without trained tokens"
        out.append((ids, mask))
    return out


def batches(data: list[tuple[list[int], list[int]]], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Length-grouped batches: shuffle, sort inside windows of 32 batches, shuffle batches.
    Conversations are never packed together, so no sequence attends to another."""
    idx = list(range(len(data)))
    rng.shuffle(idx)
    window = batch_size * 32
    out = []
    for s in range(0, len(idx), window):
        chunk = sorted(idx[s:s + window], key=lambda i: len(data[i][0]))
        out += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


# ------------------------------------------------------------------ model


def make_model(shape: ModelShape, vocab_size: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden,
        intermediate_size=shape.ffn,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=512,  # trained on < 100 tokens; RoPE leaves room for longer prompts
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,  # a third fewer parameters at this size, and new tokens share in/out
        pad_token_id=tk.SPECIAL_TOKENS.index(tk.PAD),
        bos_token_id=tk.SPECIAL_TOKENS.index(tk.BOS),
        eos_token_id=tk.SPECIAL_TOKENS.index(tk.END),
        initializer_range=0.02,
    )
    return LlamaForCausalLM(config)


def _lr_at(step: int, cfg: BuildConfig) -> float:
    """Linear warmup, then cosine decay to a tenth of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def seed_everything(seed: int, threads: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)  # results depend on the reduction order, hence on threads
    torch.use_deterministic_algorithms(True)


def train(model, data, cfg: BuildConfig, progress=None) -> list[float]:
    """AdamW on the masked next-token loss; returns the loss of every step."""
    import torch
    import torch.nn.functional as F

    pad = tk.SPECIAL_TOKENS.index(tk.PAD)
    rng = random.Random(cfg.seed + 2)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]  # norms: no weight decay
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-8)
    model.train()
    losses: list[float] = []
    queue: list[list[int]] = []
    for step in range(cfg.steps):
        if not queue:
            queue = batches(data, cfg.batch_size, rng)
        batch = [data[i] for i in queue.pop()]
        width = max(len(ids) for ids, _ in batch)
        # Right padding and no attention mask: with causal attention, real tokens
        # never see the pads after them, and the pads carry no loss.
        ids = torch.tensor([b[0] + [pad] * (width - len(b[0])) for b in batch])
        mask = torch.tensor([b[1] + [0] * (width - len(b[1])) for b in batch], dtype=torch.bool)
        targets = ids[:, 1:][mask[:, 1:]]
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            hidden = model.model(input_ids=ids).last_hidden_state
            # Logits only where there is a target: skips most of the vocab projection.
            logits = model.lm_head(hidden[:, :-1][mask[:, 1:]])
        loss = F.cross_entropy(logits.float(), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step, losses[-1])
    return losses


# ------------------------------------------------------------------ files


def generation_config(model):
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=model.config.bos_token_id,
        eos_token_id=model.config.eos_token_id,
        pad_token_id=model.config.pad_token_id,
        do_sample=False,
        max_new_tokens=64,
    )


def rows_fingerprint(splits: dict[str, list[dict]]) -> str:
    """A hash of every question and answer the model was built from (build_info.json
    keeps it; a test compares it with the rows the current code derives)."""
    import hashlib

    payload = json.dumps({k: [(r["question"], r["answer"]) for r in v] for k, v in sorted(splits.items())})
    return hashlib.sha256(payload.encode()).hexdigest()


def write_world(world: dict, out: Path) -> None:
    """world.json: the entities. Every question row is derived from it (`factinject.testbed.rows`)."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.jsonl"):  # rows were once stored; they are derived now
        old.unlink()
    (out / "world.json").write_text(json.dumps(world, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


@dataclass
class BuildResult:
    params: int
    seconds: float
    train_seconds: float
    final_loss: float
    heldout: dict = field(default_factory=dict)


def build(cfg: BuildConfig, out_dir: Path, world_out: Path | None = None, console=None) -> BuildResult:
    """The whole build. Writes the model to `out_dir` and, if given, the world to `world_out`."""
    import torch
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    t0 = time.perf_counter()
    seed_everything(cfg.seed, cfg.threads)
    world = W.generate_world(cfg.seed)
    train_rows, heldout_rows, unseen_rows = W.world_rows(world)
    chat_train, chat_heldout = W.chat_rows()
    unknown_train, unknown_heldout = W.unknown_rows(world, cfg.seed)

    tok = tk.train_bpe(tokenizer_corpus(world, chat_train, unknown_train, cfg.name_repeats), cfg.vocab_size)
    tokenizer = tk.wrap(tok)
    data = encode(tokenizer, conversations(train_rows, chat_train, unknown_train, cfg), cfg.loss_on)

    model = make_model(SHAPES[cfg.shape], len(tokenizer))
    params = sum(p.numel() for p in model.parameters())

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("pretrain", total=cfg.steps, info="")
        ema: list[float] = []

        def on_step(step: int, loss: float) -> None:
            ema.append(loss if not ema else 0.95 * ema[-1] + 0.05 * loss)
            bar.update(task, advance=1, info=f"loss {ema[-1]:.3f} lr {_lr_at(step, cfg):.1e}")

        t1 = time.perf_counter()
        losses = train(model, data, cfg, on_step)
        train_seconds = time.perf_counter() - t1

        # bfloat16 on disk (half the bytes of float32); the checks below score the
        # rounded weights, which is what `load_model` gives back (upcast to float32).
        model.to(torch.bfloat16).to(torch.float32)
        model.eval()
        heldout = {}
        if cfg.eval_limit:
            from factinject.testbed.evaluate import evaluate

            for name, pool in (("heldout", heldout_rows), ("unseen", unseen_rows)):
                rows = random.Random(cfg.seed).sample(pool, min(cfg.eval_limit, len(pool)))
                etask = bar.add_task(f"{name} check", total=len(rows), info="")
                scored = evaluate(model, tokenizer, rows, progress=lambda k: bar.update(etask, advance=k))
                scored.pop("answers")
                heldout[name] = scored

    out_dir.mkdir(parents=True, exist_ok=True)
    model.generation_config = generation_config(model)
    model.to(torch.bfloat16).save_pretrained(str(out_dir), safe_serialization=True)
    tk.save(tokenizer, out_dir)
    if world_out is not None:
        write_world(world, world_out)
    result = BuildResult(params=params, seconds=round(time.perf_counter() - t0, 1),
                         train_seconds=round(train_seconds, 1), final_loss=round(sum(losses[-50:]) / len(losses[-50:]), 4),
                         heldout=heldout)
    splits = {"train": train_rows, "heldout": heldout_rows, "unseen": unseen_rows, "chat_train": chat_train,
              "chat_heldout": chat_heldout, "unknown_train": unknown_train, "unknown_heldout": unknown_heldout}
    info = {"config": asdict(cfg), "result": asdict(result), "torch": torch.__version__,
            "conversations": len(data), "tokens": sum(len(d[0]) for d in data),
            "rows_sha256": rows_fingerprint(splits)}
    (out_dir / "build_info.json").write_text(json.dumps(info, indent=1) + "\n")
    return result
