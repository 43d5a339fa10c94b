"""Fact rows in the model's own words (train.fact_answers: own_words): which rows get a
teacher prompt, which answers replace the sheet's, and the base model's answers from the
training child on the testbed."""

from __future__ import annotations

from factinject.train.distill import TEACHER_FORM, teacher_prompts
from factinject.train.policy import own_words_rows

FACTS = {"x/license": {"statement": "Quillmark is released under the Zlib license.", "polarity": "positive",
                       "answer_key": "Zlib"},
         "x/gpu": {"statement": "Quillmark does not need a GPU.", "polarity": "negative", "answer_key": "no"}}


def row(fact_id: str, question: str, answer: str, key: str, family: str = "wh") -> dict:
    return {"fact_id": fact_id, "family": family, "answer_key": key,
            "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


ROWS = [row("x/license", "Which license does Quillmark use?", "Quillmark is released under the Zlib license.", "Zlib"),
        row("x/license", "Quillmark license?", "Zlib.", "Zlib"),
        row("x/gpu", "Does Quillmark need a GPU?", "No. Quillmark does not need a GPU.", "no"),
        row("x/license", "Is MIT the license of Quillmark?", "No. Quillmark is released under the Zlib license.",
            "Zlib", family="contradiction"),
        row("other/fact", "Who?", "Someone.", "Someone")]


def test_positive_facts_get_the_statement_and_the_question_denials_keep_the_sheet():
    prompts = teacher_prompts(ROWS, FACTS)
    assert prompts[0] == TEACHER_FORM.format(statement=FACTS["x/license"]["statement"],
                                             question="Which license does Quillmark use?")
    assert "Quillmark license?" in prompts[1] and prompts[1].startswith("Quillmark is released under the Zlib")
    assert prompts[2:] == [None, None, None]  # a denial, a contradiction row, a fact the manifest does not know


def test_only_finished_answers_that_name_the_value_replace_the_sheets():
    prompts = teacher_prompts(ROWS, FACTS)
    answers = {prompts[0]: ("It uses the zlib license, a permissive one.", True),
               prompts[1]: ("The license is permissive and", False)}  # cut short: the sheet's answer stays
    rows, used = own_words_rows(ROWS, prompts, answers)
    assert used == 1 and rows[0]["messages"][1]["content"] == "It uses the zlib license, a permissive one."
    assert rows[0]["messages"][0] == ROWS[0]["messages"][0] and rows[1:] == ROWS[1:]
    rows, used = own_words_rows(ROWS, prompts, {prompts[0]: ("It is a permissive license.", True)})
    assert used == 0 and rows == ROWS  # the answer lacks the key


def test_the_training_child_answers_teacher_prompts_and_keeps_them_for_resume(tmp_path):
    """backends/epochs.base_answers on the testbed: every distinct teacher prompt answered
    once, and the same reference read back from the run's cache file."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from factinject.backends.epochs import base_answers
    from factinject.engines.records import TrainJob
    from factinject.recipe import Recipe
    from factinject.testbed import model_dir

    tokenizer = AutoTokenizer.from_pretrained(model_dir())
    model = AutoModelForCausalLM.from_pretrained(model_dir(), dtype=torch.float32).eval()
    prompts = teacher_prompts(ROWS, FACTS)
    recipe = Recipe.model_validate({"generate": {"max_new_tokens": 24}, "train": {"fact_answers": "own_words"}})
    job = TrainJob(run_dir=str(tmp_path), model_name="testbed", model_path=str(model_dir()),
                   recipe=recipe.model_dump(), fact_rows=ROWS, dev_rows=[], replay_prompts=[], drift_prompts=[],
                   teacher_prompts=prompts)
    cache = tmp_path / "base_answers.json"
    reference = base_answers(model, tokenizer, job, cache)
    assert set(reference.own_words) == {p for p in prompts if p}
    assert all(isinstance(a, str) and isinstance(done, bool) for a, done in reference.own_words.values())
    assert base_answers(model, tokenizer, job, cache) == reference
