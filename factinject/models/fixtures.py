"""Tiny models of real families, for running a real recipe's whole path on any CPU.

A fixture has the architecture of its family scaled down to a few MB (Llama-3.1,
Qwen2.5, Gemma-2), that family's real chat template (TRL ships them) and special
tokens, and a small byte-level BPE tokenizer. Its random weights are briefly trained
on the testbed world's questions, so that it answers them in a few tokens and ends its
turn the way the family does, and on general prompts with answers of 40 to 200 tokens:
replay, drift, parity and end-of-turn handling then meet the same situations they meet
on a real model. Nothing is downloaded.

`fixture:<family>` as a model name resolves to a fixture built on first use under
the cache folder; `fixture:<family>-bnb-4bit` is the same model saved pre-quantized
to NF4 with bitsandbytes, like the `unsloth/...-bnb-4bit` checkpoints recipes name.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from factinject.controls import general_prompts
from factinject.errors import FactinjectError
from factinject.models import cache_home
from factinject.models.chat import encode_for_training
from factinject.rundir.files import atomic_dir
from factinject.testbed import load_world_train
from factinject.testbed import tokenizer as bpe
from factinject.testbed.pretrain import rows_fingerprint

FIXTURE_VERSION = 2  # part of the cache folder name (with the corpus's fingerprint): bump when the build changes


@dataclass(frozen=True)
class Family:
    name: str
    config_class: str  # transformers config class
    template: str  # file in trl/chat_templates
    special: tuple[str, ...]  # special tokens, in id order from 0
    bos: str | None
    eos: str  # the tokenizer's eos_token (what the instruct model's tokenizer_config says)
    pad: str
    stop: tuple[str, ...]  # the generation config's eos_token_id list
    added: tuple[str, ...] = ()  # added tokens that are not special (tool markers)
    config: dict = field(default_factory=dict)
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


_SHAPE = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, head_dim=32)

FAMILIES = {
    "llama3.1": Family(
        "llama3.1", "LlamaConfig", "llama3_1.jinja",
        special=("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                 "<|eom_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>"),
        bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|finetune_right_pad_id|>",
        stop=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
        config=dict(max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=False,
                    rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 8192}),
    ),
    "qwen2.5": Family(
        "qwen2.5", "Qwen2Config", "qwen2_5.jinja",
        special=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        bos=None, eos="<|im_end|>", pad="<|endoftext|>", stop=("<|im_end|>", "<|endoftext|>"),
        added=("<tool_call>", "</tool_call>"),
        config=dict(max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=False,
                    use_sliding_window=False, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
    ),
    "gemma2": Family(
        "gemma2", "Gemma2Config", "gemma.jinja",
        special=("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"),
        bos="<bos>", eos="<eos>", pad="<pad>", stop=("<eos>", "<end_of_turn>"),
        config=dict(max_position_embeddings=8192, rms_norm_eps=1e-6, tie_word_embeddings=True,
                    query_pre_attn_scalar=32, sliding_window=256, final_logit_softcapping=30.0,
                    attn_logit_softcapping=50.0, hidden_activation="gelu_pytorch_tanh"),
    ),
}
VOCAB_SIZE = 1024
LONG_MIN, LONG_MAX = 4, 12  # sentences in a long answer
LONG_SHARE = 0.25  # of each training batch
SEED = 1234


def parse_name(name: str) -> tuple[Family, bool]:
    """'fixture:qwen2.5-bnb-4bit' -> (the qwen2.5 family, quantized=True)."""

    spec = name.split(":", 1)[1]
    quantized = spec.endswith("-bnb-4bit")
    family = spec.removesuffix("-bnb-4bit")
    if family not in FAMILIES:
        raise FactinjectError(f"no fixture family {family!r}", where=name,
                              fix=f"use one of: {', '.join('fixture:' + f for f in FAMILIES)} (add -bnb-4bit for NF4)")
    return FAMILIES[family], quantized


def cache_root() -> Path:
    return cache_home() / "fixtures"


def fixture_path(name: str) -> Path:
    """The folder of fixture `name`, built (once, under a lock) when it is missing."""
    import fcntl

    family, quantized = parse_name(name)
    root = cache_root()
    version = f"v{FIXTURE_VERSION}-{corpus_fingerprint()}"
    plain = root / f"{family.name}-{version}"
    target = root / f"{family.name}-bnb-4bit-{version}" if quantized else plain
    if (target / "config.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test processes may ask at once
        if not (plain / "config.json").exists():
            _publish(plain, lambda tmp: build(family, tmp))
        if quantized and not (target / "config.json").exists():
            _publish(target, lambda tmp: quantize(plain, tmp))
    return target


def _publish(target: Path, fill) -> None:

    with atomic_dir(target) as tmp:
        fill(tmp)


def chat_template(family: Family) -> str:
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / family.template).read_text(encoding="utf-8")


def _corpus(limit: int = 1500) -> list[dict]:
    """What the fixture learns: short world Q/A pairs (answer in a few tokens, then end the
    turn) and long answers to the shipped general prompts, as an instruct model gives to
    "Explain the offside rule". Long answers are what cut replay targets and drift on long
    answers are about; without them every answer would end within a dozen tokens."""

    rows = load_world_train()
    rng = random.Random(SEED)
    rows = [{"question": r["question"], "answer": r["answer"]} for r in rng.sample(rows, min(limit, len(rows)))]
    sentences = [r["answer"] for r in rows]
    # LONG_MIN to LONG_MAX sentences: about 40 to 200 tokens, past DRIFT_TOKENS and past a
    # short max_new_tokens.
    rows += [{"question": prompt, "answer": " ".join(f"{i + 1}. {s}" for i, s in enumerate(
        rng.sample(sentences, rng.randint(LONG_MIN, LONG_MAX)))), "long": True}
             for prompt in dict.fromkeys(general_prompts())]
    return rows


@functools.cache  # every model name that resolves to a fixture asks; the inputs are fixed per process
def corpus_fingerprint() -> str:
    """Part of the cache folder name: what a fixture is built from and by. Another world or
    prompt set, another build script or tokenizer builder, or another version of the
    libraries that train it and give its chat template, and the fixture is rebuilt; with
    the same inputs a fresh clone on this machine reuses the fixtures built before."""
    from importlib.metadata import version

    code = [Path(__file__).read_text(encoding="utf-8"), Path(bpe.__file__).read_text(encoding="utf-8")]
    libraries = [version(name) for name in ("torch", "transformers", "tokenizers", "trl", "bitsandbytes")]
    inputs = json.dumps([rows_fingerprint({"corpus": _corpus()}), code, libraries])
    return hashlib.sha256(inputs.encode("utf-8")).hexdigest()[:10]


def build_tokenizer(family: Family, texts: list[str]):
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = bpe.train_bpe(texts, VOCAB_SIZE, family.special)
    if family.bos:  # Llama and Gemma tokenizers put bos in front of plain text, as the real ones do
        tok.post_processor = processors.TemplateProcessing(single=f"{family.bos} $A", pair=f"{family.bos} $A $B",
                                                           special_tokens=[(family.bos, tok.token_to_id(family.bos))])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=family.bos, eos_token=family.eos,
                                      pad_token=family.pad, clean_up_tokenization_spaces=False)
    if family.added:
        wrapped.add_tokens(list(family.added))
    wrapped.chat_template = chat_template(family)
    return wrapped


def build(family: Family, out: Path, steps: int = 400) -> None:
    """Write a 16-bit (bf16) fixture of `family` into `out`."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig


    corpus = _corpus()
    texts = [f"{r['question']} {r['answer']}" for r in corpus]
    tokenizer = build_tokenizer(family, texts)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in family.special}
    config = getattr(transformers, family.config_class)(
        vocab_size=len(tokenizer), bos_token_id=ids.get(family.bos), eos_token_id=[ids[t] for t in family.stop],
        pad_token_id=ids[family.pad], initializer_range=0.02, **_SHAPE, **family.config)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # 400 steps: enough to answer world questions in a few tokens and end the turn with the
    # family's own end-of-turn token, and to answer about half the general prompts at
    # length (150 steps gave long answers everywhere, 300 to a dozen general prompts).
    encoded = [encode_for_training(tokenizer, [{"role": "user", "content": r["question"]},
                                               {"role": "assistant", "content": r["answer"]}]) for r in corpus]
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    short = [e for e, r in zip(encoded, corpus) if not r.get("long")]
    long = [e for e, r in zip(encoded, corpus) if r.get("long")]
    # A fixed share of long answers per batch: at their share of the corpus the short
    # world answers win every decision to end the turn.
    n_long = round(16 * LONG_SHARE)
    rng = random.Random(SEED)
    model.train()
    with _threads(2):
        for _ in range(steps):
            batch = rng.sample(short, 16 - n_long) + rng.sample(long, n_long)
            width = max(len(i) for i, _ in batch)
            input_ids = torch.tensor([i + [config.pad_token_id] * (width - len(i)) for i, _ in batch])
            labels = torch.tensor([[t if m else -100 for t, m in zip(i, k)] + [-100] * (width - len(i)) for i, k in batch])
            attention = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch])
            loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.eval()
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                                               pad_token_id=config.pad_token_id, do_sample=False)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    (out / "fixture.json").write_text(json.dumps({"family": family.name, "version": FIXTURE_VERSION, "steps": steps,
                                                  "final_loss": round(loss.item(), 4), "seed": SEED}) + "\n")


def quantize(plain: Path, out: Path) -> None:
    """Save the fixture pre-quantized to NF4 (double quant, bf16 compute), as Unsloth's checkpoints are."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(str(plain), quantization_config=config, dtype=torch.bfloat16)
    model.save_pretrained(str(out))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                 "fixture.json"):
        if (plain / name).exists():
            shutil.copy2(plain / name, out / name)


class _threads:
    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        import torch

        self.before = torch.get_num_threads()
        torch.set_num_threads(min(self.n, self.before))

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.before)
