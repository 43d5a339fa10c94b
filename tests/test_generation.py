"""The CPU levers change the cost, never the result: refilled batches answer as plain
batched generation, grouped-query attention under a padding mask is SDPA's, and the
loss over labelled positions only is the full loss."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def tiny_llama(attention: str):
    """A random Llama with grouped-query attention (4 query heads, 2 key/value heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    config._attn_implementation = attention
    return LlamaForCausalLM(config).eval()


def left_padded(lengths: list[int]):
    width = max(lengths)
    ids = torch.randint(3, 500, (len(lengths), width))
    mask = torch.tensor([[0] * (width - n) + [1] * n for n in lengths])
    return ids, mask


def answer_batch(rows: int, padded: dict[int, int] | None = None):
    """(ids, attention mask, labels) of `rows` 20-token rows: row r right-padded by
    padded[r] tokens, as training batches are padded; the first 8 tokens are the prompt
    (label -100), the rest the answer."""
    ids, _ = left_padded([20] * rows)
    mask = torch.ones_like(ids)
    for row, n in (padded or {}).items():
        mask[row, -n:] = 0
    labels = ids.clone()
    labels[:, :8] = -100
    labels[mask == 0] = -100
    return ids, mask, labels


def test_grouped_attention_under_padding_is_sdpa():
    from factinject.backends.loading import grouped_sdpa

    ids, mask = left_padded([5, 17, 11, 17])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        plain = tiny_llama("sdpa")(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        grouped = tiny_llama(grouped_sdpa())(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    real = mask.bool()
    assert torch.allclose(plain[real], grouped[real], atol=1e-5), (plain[real] - grouped[real]).abs().max()
    # Padding matters: the same rows without their mask give other logits.
    with torch.inference_mode():
        unmasked = tiny_llama(grouped_sdpa())(input_ids=ids, position_ids=positions).logits
    assert not torch.allclose(unmasked[0][real[0]], plain[0][real[0]], atol=1e-3)


def test_rows_are_grouped_by_length_with_the_least_padding():
    from factinject.backends.sft import length_groups

    assert length_groups([50, 160, 52, 158, 49], overhead=0) == [[4], [0], [2], [3], [1]]
    assert length_groups([50, 160, 52, 158, 49], overhead=40) == [[4, 0, 2], [3, 1]]
    assert length_groups([50, 160, 52, 158, 49], overhead=10_000) == [[4, 0, 2, 3, 1]]


@pytest.mark.parametrize("overhead", [0, 10_000], ids=["grouped", "one-pass"])
def test_the_loss_over_labelled_positions_is_the_full_loss(overhead, monkeypatch):
    from peft import LoraConfig, get_peft_model

    from factinject.backends.sft import answer_loss, labelled_positions_only

    monkeypatch.setattr("factinject.backends.sft.GROUP_OVERHEAD_TOKENS", overhead)
    ids, mask, labels = answer_batch(4, {1: 6, 2: 11})
    n = (labels[:, 1:] != -100).sum()
    results = []
    for way in ("full", "labelled"):
        model = get_peft_model(tiny_llama("sdpa"), LoraConfig(r=4, target_modules=["q_proj", "down_proj"],
                                                              init_lora_weights=False))
        assert labelled_positions_only(model)
        if way == "full":
            loss = model(input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=n).loss
        else:
            loss = answer_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": labels}, n)
        loss.backward()
        results.append((loss.detach(), [p.grad for p in model.parameters() if p.requires_grad]))
    (full, full_grads), (ours, our_grads) = results
    assert torch.allclose(full, ours, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(full_grads, our_grads))


def test_the_loss_over_labelled_positions_is_gemma2s_soft_capped_loss():
    """Gemma-2 caps its logits (cap * tanh(logits / cap)): the loss over labelled positions
    applies the same cap (hf_generate.lm_head), so it is the model's own loss there too,
    gradients included, and the KL anchor trains it."""
    from peft import LoraConfig, get_peft_model
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from factinject.backends.sft import answer_loss, labelled_positions_only

    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                          final_logit_softcapping=0.05, attn_logit_softcapping=50.0)
    config._attn_implementation = "eager"
    base = Gemma2ForCausalLM(config).eval()
    ids, mask, labels = answer_batch(3, {1: 5})
    n = (labels[:, 1:] != -100).sum()
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "down_proj"], init_lora_weights=False))
    assert labelled_positions_only(model)
    full = model(input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=n).loss
    ours = answer_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": labels}, n)
    assert torch.allclose(full, ours, atol=1e-5), (full, ours)
    uncapped = torch.nn.functional.cross_entropy(
        model.get_output_embeddings()(model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state)[:, :-1][
            labels[:, 1:] != -100].float(), labels[:, 1:][labels[:, 1:] != -100], reduction="sum") / n
    assert not torch.allclose(uncapped, ours, atol=1e-3), "the cap changes the loss: the test would see a missing one"


def test_anchor_positions_are_trained_on_the_base_models_distribution():
    """train.replay_loss: kl. Rows marked as anchors (labels + ANCHOR) add KL(base || tuned)
    at their answer positions, the base being the adapter switched off; other rows keep the
    cross-entropy. An adapter that changes nothing has a KL of zero there."""
    from peft import LoraConfig, get_peft_model

    from factinject.backends.sft import ANCHOR, answer_loss

    ids, mask, labels = answer_batch(4, {3: 5})
    anchored = labels.clone()
    anchored[2:][anchored[2:] != -100] += ANCHOR  # rows 2 and 3 are replayed rows
    for init in (True, False):  # LoRA B = 0 (no change yet), then random
        model = get_peft_model(tiny_llama("sdpa"), LoraConfig(r=4, target_modules=["q_proj", "down_proj"],
                                                              init_lora_weights=init))
        n = (labels[:, 1:] != -100).sum()
        ours = answer_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": anchored}, n)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        with torch.no_grad(), model.disable_adapter():
            base = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float().log_softmax(-1)
        targets = labels[:, 1:]
        ce = torch.nn.functional.cross_entropy(logits[:2][targets[:2] != -100], targets[:2][targets[:2] != -100],
                                               reduction="sum")
        at = targets[2:] != -100
        b, t = base[2:][at], logits[2:][at].log_softmax(-1)
        kl = (b.exp() * (b - t)).sum()
        assert torch.allclose(ours, (ce + kl) / n, atol=1e-5), (ours, (ce + kl) / n)
        if init:
            assert kl.abs() < 1e-5, "the adapter changes nothing yet: the anchor costs nothing"
        else:
            assert kl > 1e-3
        ours.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_training_rows_mark_the_anchor_sources():
    from transformers import AutoTokenizer

    from factinject.backends.sft import ANCHOR, training_rows
    from factinject.testbed import model_dir

    tokenizer = AutoTokenizer.from_pretrained(model_dir())
    chat = [{"role": "user", "content": "Who maintains Zorblat?"}, {"role": "assistant", "content": "Ann Lee."}]
    plain, replayed = training_rows(tokenizer, [{"messages": chat, "source": "fact"},
                                                {"messages": chat, "source": "replay"}], 160, ("replay",))
    assert plain["input_ids"] == replayed["input_ids"]
    assert [x - ANCHOR if x >= ANCHOR else x for x in replayed["labels"]] == plain["labels"]
    assert sum(x >= ANCHOR for x in replayed["labels"]) == sum(x != -100 for x in plain["labels"]) > 0


def test_replay_and_contrast_rows_are_anchored_as_the_recipe_says():
    from factinject.backends.sft import anchored_sources
    from factinject.recipe import load_recipe

    recipe = load_recipe("smollm2-135m-instruct")
    assert anchored_sources(recipe) == ()
    for replay, contrast, expected in (("kl", "tokens", ("replay",)), ("tokens", "kl", ("contrast",)),
                                       ("kl", "kl", ("replay", "contrast"))):
        train = recipe.train.model_copy(update={"replay_loss": replay, "contrast_loss": contrast})
        assert anchored_sources(recipe.model_copy(update={"train": train})) == expected


def test_cpu_autocast_runs_the_products_in_bfloat16_and_keeps_the_adapter_float32():
    """train.cpu_autocast: the CPU trainer's step multiplies in bfloat16 (a LoRA layer's
    output is bfloat16), the loss and the adapter's gradients stay float32 and close to
    the float32 step's; off, every product is float32."""
    from peft import LoraConfig, get_peft_model

    from factinject.backends.sft import cpu_trainer_class

    ids, _ = left_padded([20] * 4)
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, :8] = -100
    results = {}
    for dtype in (None, torch.bfloat16):
        model = get_peft_model(tiny_llama("sdpa"), LoraConfig(r=4, target_modules=["q_proj", "down_proj"],
                                                              init_lora_weights=False))
        seen = []
        layer = model.base_model.model.model.layers[0].self_attn.q_proj
        layer.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
        trainer = cpu_trainer_class(dtype)
        loss = trainer.compute_loss(None, model, {"input_ids": ids, "attention_mask": mask, "labels": labels})
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert loss.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads)
        assert seen == [dtype or torch.float32], seen
        results[dtype] = (loss.detach(), grads)
    (exact, exact_grads), (mixed, mixed_grads) = results[None], results[torch.bfloat16]
    assert not torch.equal(exact, mixed), "bfloat16 products round differently"
    assert torch.allclose(exact, mixed, rtol=2e-2), (exact, mixed)
    cosine = torch.nn.functional.cosine_similarity(torch.cat([g.flatten() for g in exact_grads]),
                                                   torch.cat([g.flatten() for g in mixed_grads]), dim=0)
    assert cosine > 0.99, cosine


def test_cpu_autocast_auto_takes_bfloat16_only_where_the_cpu_has_it():
    from factinject.backends.loading import cpu_autocast_dtype

    native = {"avx2", "avx512f", "avx512_bf16"}
    assert cpu_autocast_dtype("auto", False, native) is torch.bfloat16
    assert cpu_autocast_dtype("auto", False, {"avx2", "amx_bf16"}) is torch.bfloat16
    assert cpu_autocast_dtype("auto", False, {"avx2", "avx512f"}) is None  # emulated: slower than float32
    assert cpu_autocast_dtype("auto", True, native) is None  # a 4-bit base computes in bitsandbytes' dtype
    assert cpu_autocast_dtype("off", False, native) is None
    assert cpu_autocast_dtype("bfloat16", False, set()) is torch.bfloat16  # asked for: taken as said


def test_refilled_batches_answer_as_plain_batched_generation():
    """The testbed (plain path in its own right) with many prompts of many lengths in
    small batches, so rows leave and join many times."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from factinject.backends.hf_generate import generate, refillable
    from factinject.testbed import load_heldout, model_dir

    model = AutoModelForCausalLM.from_pretrained(model_dir(), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir())
    assert refillable(model)
    questions = [r["question"] for r in load_heldout()[:40]]
    questions += [q + " Please answer in one sentence, and say why." * (i % 3) for i, q in enumerate(questions[:10])]
    chats = [[{"role": "user", "content": q}] for q in questions]
    results = {}
    for refill in (False, True):
        ids: list = []
        answers, finished = generate(model, tokenizer, chats, batch_size=8, max_new_tokens=10, token_ids=ids,
                                     refill=refill)
        results[refill] = (answers, finished, ids)
    assert results[True] == results[False]
    assert not all(results[True][1]), "some answers should hit the budget, so both kinds of ending are compared"


def test_batched_teacher_forcing_gives_each_sequence_its_own_logits():
    """Agreement (teacher-forced locality) reads answers in right-padded batches, the LM
    head at answer positions only: the same logits as one sequence at a time, with a
    LoRA adapter on and off."""
    from peft import LoraConfig, get_peft_model

    from factinject.backends.hf_generate import teacher_forced, teacher_forced_batched

    model = get_peft_model(tiny_llama("sdpa"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                          init_lora_weights=False)).eval()
    g = torch.Generator().manual_seed(1)
    sequences = [(torch.randint(3, 500, (p,), generator=g).tolist(), torch.randint(3, 500, (a,), generator=g).tolist())
                 for p, a in [(5, 9), (17, 3), (11, 30), (4, 0), (9, 21)]]
    for adapter_on in (True, False):
        with (torch.no_grad() if adapter_on else model.disable_adapter()):
            alone = teacher_forced(model, sequences)
            batched = dict((i, (logits, answer)) for i, logits, answer in teacher_forced_batched(model, sequences, 3))
        assert sorted(batched) == list(range(len(sequences)))
        for i, (logits, answer) in enumerate(alone):
            assert batched[i][1] == answer
            assert batched[i][0].shape == logits.shape
            assert torch.allclose(batched[i][0], logits, atol=1e-4), (batched[i][0] - logits).abs().max()


def test_out_of_memory_halves_the_batch_on_any_device(monkeypatch):
    """Answering halves its batch when the allocator fails, the CPU's as the GPU's, and
    starts the progress over; another error is not retried."""
    from factinject.backends import hf

    tried = []

    def fake_generate(model, tokenizer, chats, batch_size, max_new_tokens, progress, token_ids):
        tried.append(batch_size)
        if batch_size > 16:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return ["ok"] * len(chats), [True] * len(chats)

    monkeypatch.setattr("factinject.backends.hf_generate.generate", fake_generate)
    answers, _ = hf._answer(None, None, ["q1", "q2"], 32, 64, "base")
    assert answers == ["ok", "ok"] and tried == [64, 32, 16]

    def broken(*args, **kwargs):
        tried.append("broken")
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr("factinject.backends.hf_generate.generate", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        hf._answer(None, None, ["q1"], 32, 64, "base")
    assert tried[-1] == "broken" and tried.count("broken") == 1
