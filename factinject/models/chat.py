"""Chat-template facts that training, export and probing must agree on."""

from __future__ import annotations

_U1, _A1, _U2, _A2 = "\x01user-one\x01", "\x01answer-one\x01", "\x01user-two\x01", "\x01answer-two\x01"


def _render_pair(tokenizer) -> str:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": _U1}, {"role": "assistant", "content": _A1}], tokenize=False)


def end_of_turn_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant turn: eos plus the template's own end marker
    (<|eot_id|>, <|im_end|>, <|end|>), so generation configs stop where training stopped."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    tail = _render_pair(tokenizer).split(_A1, 1)[1]
    special = set(special_ids(tokenizer))
    for piece in tokenizer.encode(tail, add_special_tokens=False):
        if piece in special and piece not in ids:
            ids.append(piece)
            break  # the first special token after the answer is the turn's end
    return ids


def special_ids(tokenizer) -> list[int]:
    """Ids of every special token: the named ones and the added tokens marked special
    (a real tokenizer lists <end_of_turn> or <|eot_id|> only there)."""
    ids = set(tokenizer.all_special_ids)
    ids.update(i for i, t in tokenizer.added_tokens_decoder.items() if t.special)
    return sorted(ids)


def turn_markers(tokenizer) -> tuple[str, str]:
    """(instruction_part, response_part) for Unsloth's `train_on_responses_only`, read
    off the model's own template instead of hard-coded per model family.

    response_part: the text between a user message and the assistant's answer
    (e.g. "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n").
    instruction_part: the text that opens a user turn, *without* the assistant's
    end-of-turn before it: that token must stay in the loss, or the model never
    learns to stop.
    """
    one = tokenizer.apply_chat_template(
        [{"role": "user", "content": _U1}, {"role": "assistant", "content": _A1}], tokenize=False)
    two = tokenizer.apply_chat_template(
        [{"role": "user", "content": _U1}, {"role": "assistant", "content": _A1},
         {"role": "user", "content": _U2}, {"role": "assistant", "content": _A2}], tokenize=False)
    assistant_end = one.split(_A1, 1)[1]  # what closes an assistant turn (often followed by nothing)
    response_part = two.split(_U2, 1)[1].split(_A2, 1)[0]
    between = two.split(_A1, 1)[1].split(_U2, 1)[0]
    instruction_part = between[len(assistant_end):] if assistant_end and between.startswith(assistant_end) else between
    assert response_part.strip(), "the chat template puts nothing between user and assistant turns"
    assert instruction_part.strip(), "the chat template puts nothing before a user turn"
    return instruction_part, response_part


def encode_for_training(tokenizer, messages: list[dict], cut: bool = False) -> tuple[list[int], list[int]]:
    """(input_ids, completion_mask) of one conversation whose last message is the answer.

    The mask is 1 exactly on the tokens after the prompt the model answers: the
    answer, its end-of-turn token and whatever the template puts after it. It is read
    off the template itself (the prompt rendered with a generation prompt must be a
    prefix of the whole conversation), so it is right for any chat template, with or
    without `{% generation %}` markers, and the same for every training engine.
    `cut`: the answer is the opening of a longer one (a replayed answer cut to a token
    budget), so the sequence ends with the answer's last token: no end of turn is
    taught where the model would have gone on.
    """
    assert messages and messages[-1]["role"] == "assistant", "the last message must be the answer"
    prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True, return_dict=False)
    full = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    if full[:len(prompt)] != prompt:
        raise ValueError("the chat template renders the prompt differently once the answer follows it, so the "
                         "answer's tokens cannot be told apart from the prompt's")
    if cut:
        stops = set(end_of_turn_ids(tokenizer))
        end = next((i for i in range(len(prompt), len(full)) if full[i] in stops), len(full))
        full = full[:end]
    return full, [0] * len(prompt) + [1] * (len(full) - len(prompt))
