"""The pure parts of training: epoch choice, replay mixing, template turn markers."""

from __future__ import annotations

from factinject.engines.records import EpochRecord
from factinject.recipe import StopSpec
from factinject.train.policy import choose_epoch, mix_replay


def rec(epoch, recall, drift=0.0, drift_n=10):
    return EpochRecord(epoch=epoch, loss=1.0, dev_recall=recall, dev_correct=int(recall * 10), dev_n=10,
                       drift=drift, drift_changed=round(drift * drift_n), drift_n=drift_n, seconds=1.0)


STOP = StopSpec(patience=2, max_drift=0.2)


def test_keeps_improving_then_stops_after_patience():
    curve = [rec(1, 0.3), rec(2, 0.6)]
    d = choose_epoch(curve, STOP, None, 20)
    assert (d.best_epoch, d.stop) == (2, False)
    curve += [rec(3, 0.6), rec(4, 0.5)]
    d = choose_epoch(curve, STOP, None, 20)
    assert (d.best_epoch, d.stop) == (3, False), "a tie goes to the later epoch"
    d = choose_epoch(curve + [rec(5, 0.5)], STOP, None, 20)
    assert (d.best_epoch, d.stop) == (3, True) and "no dev-recall gain" in d.reason


def test_min_delta_keeps_the_later_epoch_near_the_top():
    curve = [rec(1, 0.7), rec(2, 0.6), rec(3, 0.65)]
    assert choose_epoch(curve, STOP, None, 20).best_epoch == 1
    assert choose_epoch(curve, StopSpec(patience=2, max_drift=0.2, min_delta=0.1), None, 20).best_epoch == 3


def test_stops_at_perfect_dev_recall():
    d = choose_epoch([rec(1, 0.5), rec(2, 1.0)], STOP, None, 20)
    assert (d.best_epoch, d.stop) == (2, True)


def test_drift_over_the_bound_is_never_kept_and_stops_when_sure():
    d = choose_epoch([rec(1, 0.5, 0.1), rec(2, 0.9, 0.6)], STOP, None, 20)
    assert (d.best_epoch, d.stop) == (1, True) and "drift" in d.reason
    # 3 of 10 changed is over 0.2 but within noise: not kept, but no stop either.
    d = choose_epoch([rec(1, 0.5, 0.1), rec(2, 0.9, 0.3)], STOP, None, 20)
    assert (d.best_epoch, d.stop) == (1, False)
    # The same share on 100 prompts is sure.
    assert choose_epoch([rec(1, 0.5, 0.1), rec(2, 0.9, 0.33, drift_n=100)], STOP, None, 20).stop
    d = choose_epoch([rec(1, 0.5, 0.4), rec(2, 0.9, 0.3)], STOP, None, 20)
    assert d.best_epoch == 2 and not d.stop, "all drifted: the least-drifted epoch"


def test_max_epochs_and_fixed_epochs():
    assert choose_epoch([rec(1, 0.2), rec(2, 0.3)], STOP, None, 2).stop
    d = choose_epoch([rec(1, 0.9), rec(2, 0.1)], STOP, 3, 20)
    assert (d.best_epoch, d.stop) == (2, False), "fixed epochs keep the last and ignore dev recall"
    assert choose_epoch([rec(1, 0.9), rec(2, 0.1), rec(3, 0.1)], STOP, 3, 20).stop


def _row(q, a, fact="f/x"):
    return {"fact_id": fact, "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def test_mix_replay_ratio_and_determinism():
    facts = [_row(f"q{i}", f"a{i}") for i in range(10)]
    replay = [_row(f"r{i}", f"b{i}", fact=None) for i in range(3)]
    mixed = mix_replay(facts, replay, 0.5, seed=1)
    assert len(mixed) == 15 and sum(r["source"] == "replay" for r in mixed) == 5
    assert mixed == mix_replay(facts, replay, 0.5, seed=1)
    assert mixed != mix_replay(facts, replay, 0.5, seed=2)
    assert len(mix_replay(facts, [], 0.5, seed=1)) == 10
    assert all(len(r["messages"]) == 2 for r in mixed), "one conversation per row: nothing packed together"


LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


class FakeTokenizer:
    """Just enough of a tokenizer to render a Llama-3 style template."""

    def __init__(self, template):
        from jinja2 import Template

        self.template = Template(template)

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        return self.template.render(messages=messages, bos_token="<|begin_of_text|>", add_generation_prompt=add_generation_prompt)


def test_turn_markers_from_a_llama3_template_keep_the_eot_in_the_loss():
    from factinject.models.chat import turn_markers

    instruction, response = turn_markers(FakeTokenizer(LLAMA3))
    assert instruction == "<|start_header_id|>user<|end_header_id|>\n\n"
    assert response == "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"


def test_drift_on_tokens_reads_the_base_answers_teacher_forced_on_the_testbed(tmp_path):
    """stop.drift: tokens on a real model: an adapter that changes nothing keeps every
    token of the base model's answers to the drift prompts; one that changes the weights
    does not, and the epoch record says how many tokens of how many prompts."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from factinject import controls
    from factinject.backends.epochs import EpochCallback, drift_budget
    from factinject.backends.hf_generate import generate
    from factinject.engines.records import TrainJob
    from factinject.recipe import Recipe
    from factinject.testbed import model_dir

    recipe = Recipe.model_validate({"train": {"epochs": 2}, "stop": {"drift": "tokens"},
                                    "generate": {"max_new_tokens": 48}})
    assert drift_budget(recipe) == 48 and drift_budget(Recipe()) == 32
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir())
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir(), dtype=torch.float32),
                           LoraConfig(r=8, target_modules=["q_proj", "v_proj", "up_proj"])).eval()
    prompts = controls.sample(controls.control_pools("testbed")["drift"], 12, 0)
    reference, _ = generate(model, tokenizer, [[{"role": "user", "content": p}] for p in prompts],
                            max_new_tokens=drift_budget(recipe))
    job = TrainJob(run_dir=str(tmp_path), model_name="testbed", model_path=str(model_dir()),
                   recipe=recipe.model_dump(), fact_rows=[], dev_rows=[], replay_prompts=[], drift_prompts=prompts)
    job.state_dir.mkdir(parents=True)
    callback = EpochCallback(job, tokenizer, reference, curve=[])
    control = type("Control", (), {"should_training_stop": False})()
    for epoch, scale in ((1, 0.5), (2, 0.0)):  # the base read first under a changed adapter: switched off
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    torch.nn.init.normal_(p, std=scale) if scale else torch.nn.init.zeros_(p)
        callback.on_epoch_end(None, type("State", (), {"epoch": float(epoch)})(), control, model=model)
    changed, unchanged = callback.curve
    assert unchanged.drift_unit == "tokens" and unchanged.drift_prompts == 12
    assert unchanged.drift_n >= 12 * 5 and unchanged.drift_changed == 0, unchanged
    assert changed.drift_n == unchanged.drift_n and changed.drift_changed > 0 and changed.drift > 0, changed
