"""Greedy batched generation with transformers: one way of asking, everywhere.

Training (dev recall, drift, replay answers), export (parity), probing (hf engine)
and the testbed's own evaluation all call `generate_answers`, so an answer means the
same thing in every stage: the chat template with a generation prompt, greedy
decoding, left padding, stop at the first end-of-turn token (eos, or the template's
own end marker such as <|eot_id|> or <end_of_turn>).
"""

from __future__ import annotations

from factinject.models.chat import encode_for_training, end_of_turn_ids

# The testbed's answer budget (its answers are short); recipes set their own with
# generate.max_new_tokens.
MAX_NEW_TOKENS = 64
# Drift compares the opening of each answer: a change there is a change in what the
# model says, while the tail of a long answer flips on near-ties under any small
# update of the weights and would count noise as drift.
DRIFT_TOKENS = 32


def generate_answers(model, tokenizer, prompts: list[list[dict]], batch_size: int = 64,
                     max_new_tokens: int = MAX_NEW_TOKENS, progress=None) -> list[str]:
    """Greedy answers to chat prompts (lists of messages), in the input order."""
    return generate(model, tokenizer, prompts, batch_size, max_new_tokens, progress)[0]


def generate(model, tokenizer, prompts: list[list[dict]], batch_size: int = 64,
             max_new_tokens: int | list[int] = MAX_NEW_TOKENS, progress=None, token_ids: list | None = None,
             refill: bool | None = None) -> tuple[list[str], list[bool]]:
    """(answers, finished): finished is False for an answer cut by the token budget, one
    for all prompts or one per prompt (each probe set has its own, recipe.AnswerBudgets).
    A `token_ids` list receives, per prompt, (prompt ids, generated ids up to and with
    the end-of-turn id): what was really generated, which re-encoding the answer's text
    need not give back. `refill` picks the batching (default: refilled where the model
    allows it; False is the plain batched `model.generate`, kept for comparison)."""
    encoded = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False)
               for p in prompts]
    budgets = [max_new_tokens] * len(encoded) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    assert len(budgets) == len(encoded), f"{len(budgets)} budgets for {len(encoded)} prompts"
    # Sort by length so a batch pads little (and, for model.generate, by budget: one per
    # batch); answers go back to input order.
    order = sorted(range(len(encoded)), key=lambda i: (budgets[i], len(encoded[i])))
    assert tokenizer.pad_token_id is not None and tokenizer.eos_token_id is not None, "tokenizer needs pad and eos tokens"
    answers: list[str] = [""] * len(encoded)
    finished: list[bool] = [True] * len(encoded)
    was_training = model.training  # callers evaluate mid-training: leave the mode as found
    model.eval()
    try:
        way = _generate_refilled if (refillable(model) if refill is None else refill) else _generate_sorted
        generated = way(model, tokenizer, encoded, order, answers, finished, batch_size, budgets, progress)
    finally:
        model.train(was_training)
    if token_ids is not None:
        token_ids.extend(zip(encoded, generated))
    return answers, finished


def _generate_sorted(model, tokenizer, encoded, order, answers, finished, batch_size, budgets,
                     progress) -> list[list[int]]:
    import itertools

    import torch

    pad = tokenizer.pad_token_id
    stops = stop_ids(model, tokenizer)
    generated: list[list[int]] = [[] for _ in encoded]
    batches = [group[start:start + batch_size]
               for _, same in itertools.groupby(order, key=lambda i: budgets[i]) for group in [list(same)]
               for start in range(0, len(group), batch_size)]
    with torch.inference_mode():
        for idx in batches:
            max_new_tokens = budgets[idx[0]]
            width = max(len(encoded[i]) for i in idx)
            # Left padding: the last prompt token of every row sits at the same
            # position, so generated tokens line up across the batch.
            ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in idx])
            mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(encoded[i]) for i in idx])[:, None]).long()
            out = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                                 max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
                                 pad_token_id=pad)
            for row, i in zip(out[:, width:].cpu().tolist(), idx):
                answers[i], finished[i] = decode_answer(tokenizer, row, stops)
                end = next((k for k, t in enumerate(row) if t in stops), None)
                generated[i] = row[:end + 1] if end is not None else row
            if progress is not None:
                progress(len(idx))
    return generated


def refillable(model) -> bool:
    """Whether the refilling loop can drive this model: a plain per-layer key/value
    cache (no sliding-window or static layers, whose slots cannot be merged)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # noqa: BLE001 - a model type the cache cannot describe: the plain path
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


# A batch is refilled with new prompts once this share of its rows has finished: often
# enough that few rows idle, seldom enough that merging caches stays cheap.
REFILL_SHARE = 0.25


def _generate_refilled(model, tokenizer, encoded, order, answers, finished, batch_size, budgets,
                       progress) -> list[list[int]]:
    """Greedy decoding where a batch never waits for its longest answer: a row leaves the
    batch as soon as it ends, and new prompts join it (their caches left-padded to one
    length) whenever a quarter of the rows is free. Each row carries its own positions,
    so an answer does not depend on what it shares a batch with (beyond float rounding)."""
    import torch
    from transformers import DynamicCache

    pad, device = tokenizer.pad_token_id, model.device
    stops = set(stop_ids(model, tokenizer))
    generated: list[list[int]] = [[] for _ in encoded]
    queue = list(order)
    rows: list[int] = []  # prompt index of each batch row
    cache = mask = None  # the batch's cache and its [rows, length] attention mask
    refill_at = max(1, int(batch_size * REFILL_SHARE))

    def done(i: int) -> bool:
        g = generated[i]
        return g[-1] in stops or len(g) >= budgets[i]

    def prefill(idx: list[int]):
        width = max(len(encoded[i]) for i in idx)
        ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in idx], device=device)
        m = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in idx], device=device)
        c = DynamicCache(config=model.config)
        out = model(input_ids=ids, attention_mask=m, position_ids=(m.cumsum(-1) - 1).clamp(min=0),
                    past_key_values=c, use_cache=True, logits_to_keep=1)
        for i, t in zip(idx, out.logits[:, -1].argmax(-1).tolist()):
            generated[i].append(t)
        return c, m

    def merge(c1, m1, c2, m2):
        """Two batches as one: the shorter cache left-padded (masked) to the longer."""
        length = max(m1.shape[1], m2.shape[1])
        pads = [length - m1.shape[1], length - m2.shape[1]]
        for a, b in zip(c1.layers, c2.layers):
            a.keys = torch.cat([torch.nn.functional.pad(a.keys, (0, 0, pads[0], 0)),
                                torch.nn.functional.pad(b.keys, (0, 0, pads[1], 0))])
            a.values = torch.cat([torch.nn.functional.pad(a.values, (0, 0, pads[0], 0)),
                                  torch.nn.functional.pad(b.values, (0, 0, pads[1], 0))])
        return c1, torch.cat([torch.nn.functional.pad(m1, (pads[0], 0)), torch.nn.functional.pad(m2, (pads[1], 0))])

    def keep_only(keep: list[int]):
        """Drop the finished rows, then the leading columns no remaining row attends to."""
        nonlocal cache, mask, rows
        index = torch.tensor(keep, dtype=torch.long, device=device)
        mask = mask[index]
        rows = [rows[k] for k in keep]
        lead = int((mask.sum(0) == 0).long().cumprod(0).sum()) if rows else 0
        mask = mask[:, lead:]
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys[index, :, lead:], layer.values[index, :, lead:]

    with torch.inference_mode():
        while queue or rows:
            free = batch_size - len(rows)
            if queue and (not rows or free >= refill_at):
                idx, queue = queue[:free], queue[free:]
                c, m = prefill(idx)
                cache, mask = (c, m) if not rows else merge(cache, mask, c, m)
                rows = rows + idx
            else:
                last = torch.tensor([[generated[i][-1]] for i in rows], device=device)
                positions = mask.sum(-1, keepdim=True)
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                out = model(input_ids=last, attention_mask=mask, position_ids=positions, past_key_values=cache,
                            use_cache=True)
                for i, t in zip(rows, out.logits[:, -1].argmax(-1).tolist()):
                    generated[i].append(t)
            ended = [k for k, i in enumerate(rows) if done(i)]
            if ended:
                for k in ended:
                    i = rows[k]
                    answers[i], finished[i] = decode_answer(tokenizer, generated[i], list(stops))
                if progress is not None:
                    progress(len(ended))
                gone = set(ended)
                keep_only([k for k in range(len(rows)) if k not in gone])
    return generated


def decode_answer(tokenizer, token_ids: list[int], stops: list[int]) -> tuple[str, bool]:
    """(answer, finished): the text up to the first end-of-turn id, special tokens dropped;
    finished is False when no end-of-turn id came (the budget cut the answer). Every
    engine decodes its generated ids through this, so answers compare as text."""
    end = next((k for k, t in enumerate(token_ids) if t in stops), None)
    kept = token_ids[:end] if end is not None else token_ids
    return tokenizer.decode(kept, skip_special_tokens=True).strip(), end is not None


def stop_ids(model, tokenizer) -> list[int]:
    """End-of-turn ids of the template, plus every eos the model's generation config
    lists (Llama-3.1 also ends with <|eom_id|> and <|end_of_text|>)."""
    return _with_eos(end_of_turn_ids(tokenizer), getattr(getattr(model, "generation_config", None), "eos_token_id", None))


def stop_ids_of(model_path: str, tokenizer, local: bool = True) -> list[int]:
    """stop_ids for a model that is not loaded in this process: its generation config from the folder."""
    from transformers import GenerationConfig

    try:
        generation = GenerationConfig.from_pretrained(model_path, local_files_only=local)
    except OSError:
        generation = GenerationConfig()
    return _with_eos(end_of_turn_ids(tokenizer), generation.eos_token_id)


def _with_eos(ids: list[int], config: int | list[int] | None) -> list[int]:
    for i in [config] if isinstance(config, int) else (config or []):
        if i not in ids:
            ids.append(i)
    return ids


AGREEMENT_BATCH = 8  # answers per teacher-forced pass: SmolLM2's 256-token answers, 2 cores (docs/benchmarks.md)


def answer_sequences(tokenizer, questions: list[str], answers: list[str]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) per question and a given answer (the base model's), as the
    chat template encodes them for training: what the teacher-forced readings take."""
    sequences = []
    for question, answer in zip(questions, answers, strict=True):
        ids, mask = encode_for_training(tokenizer, [{"role": "user", "content": question},
                                                    {"role": "assistant", "content": answer}])
        split = mask.index(1)  # the prompt, then the answer
        sequences.append((ids[:split], ids[split:]))
    return sequences


def teacher_forced(model, sequences: list[tuple[list[int], list[int]]]) -> list:
    """For each (prompt ids, answer ids) as `generate` gave them, the logits (float32, on
    the CPU) at the positions that predict each answer token, and those token ids. Fed
    the generated ids themselves, not a re-encoding of the answer's text: where the two
    differ (long repetitions split otherwise), the comparison would follow a path that
    neither model took."""
    import torch

    out = []
    with torch.inference_mode():
        for prompt, answer in sequences:
            if not answer:
                out.append((torch.zeros(0, 0), []))
                continue
            ids = torch.tensor([list(prompt) + list(answer)], device=model.device)
            logits = model(input_ids=ids).logits[0].float()
            out.append((logits[len(prompt) - 1:len(prompt) + len(answer) - 1].cpu(), list(answer)))
    return out


def teacher_forced_batched(model, sequences: list[tuple[list[int], list[int]]], batch_size: int = 8):
    """teacher_forced over batches of similar length, yielding (index, logits, answer ids)
    per sequence in batch order: right padding under an attention mask leaves every real
    token's logits as alone (up to float rounding), and the LM head runs only at the
    positions that predict an answer token where the model allows it (labelled_positions_only)."""
    import torch

    head_only = labelled_positions_only(model)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]) + len(sequences[i][1]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            rows = [list(sequences[i][0]) + list(sequences[i][1]) for i in idx]
            width = max(len(r) for r in rows)
            ids = torch.tensor([r + [0] * (width - len(r)) for r in rows], device=model.device)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=model.device)
            if head_only:
                hidden = model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            else:
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            for k, i in enumerate(idx):
                prompt, answer = sequences[i]
                if not answer:
                    yield i, torch.zeros(0, 0), []
                    continue
                span = slice(len(prompt) - 1, len(prompt) + len(answer) - 1)
                out = lm_head(model, hidden[k, span]) if head_only else logits[k, span]
                yield i, out.float().cpu(), list(answer)


def teacher_forced_in_order(model, sequences: list[tuple[list[int], list[int]]], batch_size: int = 8) -> list:
    """teacher_forced's list (same order, same logits up to float rounding), computed in
    batches with the LM head at answer positions only: the export's parity check reads
    160 answers this way with each model."""
    out: list = [None] * len(sequences)
    for i, logits, answer in teacher_forced_batched(model, sequences, batch_size):
        out[i] = (logits, answer)
    return out


def labelled_positions_only(model) -> bool:
    """Whether answer_loss computes this model's loss exactly: a decoder and an LM head
    (soft-capped as Gemma-2's, by lm_head) with no other output scaling."""
    config = getattr(model, "config", None)
    return (config is not None and not getattr(config, "logit_scale", None) and hasattr(model, "get_output_embeddings")
            and hasattr(model, "get_decoder") and model.get_output_embeddings() is not None)


def lm_head(model, hidden):
    """The logits the model's own forward gives for these decoder states: its LM head, then
    the logit soft-capping of models that have it (Gemma-2: cap * tanh(logits / cap))."""
    import torch

    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits
