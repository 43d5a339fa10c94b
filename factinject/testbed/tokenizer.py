"""Byte-level BPE tokenizer and chat template of the testbed model.

Byte-level (GPT-2 style) so that *any* UTF-8 text encodes, with no unknown token:
names a user injects later ("TinyLLM", a URL, emoji, Arabic) always tokenize, into
pieces the model has embeddings for. No normalizer, so decode(encode(x)) == x.
"""

from __future__ import annotations

from pathlib import Path

PAD, BOS, END = "<|pad|>", "<|bos|>", "<|end|>"
SYSTEM, USER, ASSISTANT = "<|system|>", "<|user|>", "<|assistant|>"
# Order fixes the ids: pad 0, bos 1, end 2, then the role markers.
SPECIAL_TOKENS = (PAD, BOS, END, SYSTEM, USER, ASSISTANT)

# No newlines between turns: every character is either a marker or content, so the
# assistant mask is exactly "answer + <|end|>". The {% generation %} block is what
# `return_assistant_tokens_mask=True` (and TRL's assistant_only_loss) looks for.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<|system|>{{ message['content'] }}<|end|>"
    "{% elif message['role'] == 'user' %}<|user|>{{ message['content'] }}<|end|>"
    "{% elif message['role'] == 'assistant' %}<|assistant|>"
    "{% generation %}{{ message['content'] }}<|end|>{% endgeneration %}"
    "{% else %}{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def train_bpe(texts: list[str], vocab_size: int, special_tokens: tuple[str, ...] = SPECIAL_TOKENS):
    """Train a byte-level BPE `tokenizers.Tokenizer` on `texts`, its special tokens first
    (ids 0, 1, ...); deterministic for the same input. The testbed's tokenizer and every
    tiny fixture's are built here."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE())  # no unk_token: byte-level covers every input
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # trim_offsets=False: offsets must cover every character, or the
    # char -> token mapping behind the assistant mask would miss spaces.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    for i, t in enumerate(special_tokens):
        assert tok.token_to_id(t) == i, f"special token {t} should have id {i}"
    return tok


def wrap(tok):
    """A transformers fast tokenizer around `tok`, with the chat template and roles."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=END,
        pad_token=PAD,
        additional_special_tokens=[SYSTEM, USER, ASSISTANT],
        chat_template=CHAT_TEMPLATE,
        padding_side="left",  # generation pads on the left; training code sets its own
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )


def save(hf_tokenizer, out: Path) -> None:
    """Write tokenizer.json, tokenizer_config.json and chat_template.jinja."""
    hf_tokenizer.save_pretrained(str(out))
    assert (out / "tokenizer.json").exists(), f"no tokenizer.json in {out}"
