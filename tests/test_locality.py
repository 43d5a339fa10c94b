"""Teacher-forced locality (backends/hf.py `agreement`, probe metric `locality_tokens`):
an adapter that changes nothing scores every token and a KL of zero, one that damages the
model does not, on the testbed and on a real pretrained model (SmolLM2)."""

from __future__ import annotations

import pytest

from factinject.scoring import pooled_share


def test_pooled_share_takes_its_interval_from_the_spread_between_answers():
    even = pooled_share([(90, 100)] * 10)
    assert even["share"] == 0.9 and (even["count"], even["n"]) == (900, 1000)
    assert even["ci95"] == [0.9, 0.9]  # every answer alike: no spread
    uneven = pooled_share([(100, 100)] * 5 + [(80, 100)] * 5)
    assert uneven["share"] == 0.9 and uneven["ci95"][0] < 0.9 < uneven["ci95"][1]
    # Ten answers, not a thousand independent tokens: wider than a Wilson interval on 1000.
    assert uneven["ci95"][1] - uneven["ci95"][0] > 0.03
    assert pooled_share([])["share"] is None
    assert pooled_share([(3, 3)])["ci95"] == [1.0, 1.0]


def adapters(base_path: str, tmp_path, damage: float = 0.5):
    """(untouched, damaged) LoRA adapters on all seven projections of `base_path`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = []
    for name, std in (("untouched", 0.0), ("damaged", damage)):
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=[
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for key, p in model.named_parameters():
                if "lora_B" in key and std:
                    p.copy_(torch.randn(p.shape, generator=generator) * std)
        model.save_pretrained(tmp_path / name)
        out.append(str(tmp_path / name))
    return out


def agreement_of(base_path: str, adapter: str, questions: list[str], answers: list[str]) -> dict:
    from factinject.backends import hf
    from factinject.engines.records import AgreementJob, Load, ModelUnderTest
    from factinject.probe.metrics import compute_metrics
    from factinject.probe.sets import ProbeSet, Prompt

    target = ModelUnderTest("adapter", base_path, adapter, dtype="float32")
    results = hf.agreement(AgreementJob(target, questions, answers, Load(device="cpu")).to_dict())["results"]
    probe = ProbeSet([Prompt("locality", q) for q in questions], [], [])
    same = dict(zip(questions, answers, strict=True))
    return compute_metrics(probe, same, same, forced=dict(zip(questions, results, strict=True)))["locality_tokens"]


def base_answers(base_path: str, questions: list[str], max_new_tokens: int) -> list[str]:
    from factinject.backends import hf
    from factinject.engines.records import GenerateJob, Load, ModelUnderTest

    job = GenerateJob(ModelUnderTest("base", base_path, dtype="float32"), questions, max_new_tokens,
                      load=Load(device="cpu"))
    return hf.generate(job.to_dict())["answers"]


def check_untouched_and_damaged(base_path: str, questions: list[str], tmp_path, max_new_tokens: int):
    answers = base_answers(base_path, questions, max_new_tokens)
    untouched, damaged = adapters(base_path, tmp_path)
    kept = agreement_of(base_path, untouched, questions, answers)
    assert kept["share"] == 1.0 and kept["kl_per_token"] == 0.0, kept
    assert kept["answers"] == len(questions) and kept["n"] > len(questions)
    hurt = agreement_of(base_path, damaged, questions, answers)
    assert hurt["share"] < 0.9 and hurt["kl_per_token"] > 0.05, hurt
    return kept, hurt


def test_teacher_forced_locality_on_the_testbed(tmp_path):
    from factinject import controls
    from factinject.models.base import resolve_model

    path = resolve_model("testbed").path
    questions = controls.sample(controls.control_pools("testbed")["locality"], 12, 0)
    check_untouched_and_damaged(path, questions, tmp_path, 64)


@pytest.mark.slow
@pytest.mark.realmodel
@pytest.mark.timeout(900)
def test_teacher_forced_locality_on_smollm2(tmp_path):
    """A real model's long answers: the untouched adapter keeps every token, the damaged
    one does not; unlike word-for-word answers, which a long answer loses to one flip."""
    from factinject import controls
    from factinject.models.base import resolve_base
    from factinject.recipe import load_recipe

    spec = load_recipe("smollm2-135m-instruct").model
    path = resolve_base(spec).path
    questions = controls.sample(controls.control_pools(spec.name)["locality"], 8, 0)
    kept, hurt = check_untouched_and_damaged(path, questions, tmp_path, 128)
    print(f"SmolLM2: untouched {kept['share']:.3f} (KL {kept['kl_per_token']}), damaged {hurt['share']:.3f} "
          f"(KL {hurt['kl_per_token']}) over {kept['n']} tokens of {kept['answers']} answers")
