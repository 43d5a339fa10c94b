"""Greedy batched generation with transformers: one way of asking, everywhere.

Training (dev recall, drift), export (parity), probing (hf backend) and the testbed's
own evaluation all call `generate_answers`, so an answer means the same thing in
every stage: the chat template with a generation prompt, greedy decoding, left
padding, stop at the first end-of-turn.
"""

from __future__ import annotations

# One answer budget for every stage, so drift, locality and parity compare answers
# of the same length.
MAX_NEW_TOKENS = 64


def generate_answers(model, tokenizer, prompts: list[list[dict]], batch_size: int = 64,
                     max_new_tokens: int = MAX_NEW_TOKENS, progress=None) -> list[str]:
    """Greedy answers to chat prompts (lists of messages), in the input order."""
    encoded = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False)
               for p in prompts]
    # Sort by length so a batch pads little; answers go back to input order.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    assert tokenizer.pad_token_id is not None and tokenizer.eos_token_id is not None, "tokenizer needs pad and eos tokens"
    answers: list[str] = [""] * len(encoded)
    was_training = model.training  # callers evaluate mid-training: leave the mode as found
    model.eval()
    try:
        _generate_sorted(model, tokenizer, encoded, order, answers, batch_size, max_new_tokens, progress)
    finally:
        model.train(was_training)
    return answers


def _generate_sorted(model, tokenizer, encoded, order, answers, batch_size, max_new_tokens, progress) -> None:
    import torch

    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(encoded[i]) for i in idx)
            # Left padding: the last prompt token of every row sits at the same
            # position, so generated tokens line up across the batch.
            ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in idx])
            mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(encoded[i]) for i in idx])[:, None]).long()
            out = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                                 max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=eos, pad_token_id=pad)
            for row, i in zip(out[:, width:].cpu().tolist(), idx):
                if eos in row:  # stop at the first end-of-turn; generate pads the rest
                    row = row[:row.index(eos)]
                answers[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
            if progress is not None:
                progress(len(idx))
