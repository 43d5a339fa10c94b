"""The embedded testbed model: offline loading, world knowledge, chat template,
tokenizer coverage, deterministic rebuilds and the world's held-out split."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

# Before transformers/huggingface_hub are imported: nothing here may touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from factinject import testbed  # noqa: E402  (light: no torch)
from factinject.testbed import world as W  # noqa: E402

torch = pytest.importorskip("torch")

UTF8_SAMPLES = [
    "plain ASCII, with  two spaces and a\ttab\nand a newline",
    "emoji 😀🚀 and a family 👨‍👩‍👧 (ZWJ) and a flag 🇳🇱",
    "Arabic: مرحبا بالعالم",
    "Hebrew: שלום עולם",
    "CJK: 你好，世界 こんにちは 안녕하세요",
    "accents: café naïve Zürich e\u0301 (combining)",
    "URL https://github.com/jasonacox/TinyLLM and code `x = {'a': 1}`",
    "\u200b zero-width space, \u00a0 no-break space, \U0001d54f math",
]


@pytest.fixture(scope="module")
def loaded():
    torch.set_num_threads(2)
    return testbed.load_model()


# ----------------------------------------------------------------- the committed model


def test_committed_files_are_small_and_safetensors_only():
    files = {p.name: p.stat().st_size for p in testbed.model_dir().iterdir() if p.is_file()}
    for needed in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                   "tokenizer_config.json", "chat_template.jinja"):
        assert needed in files, f"{needed} missing from {testbed.model_dir()}"
    assert not [n for n in files if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))], f"pickle weights in {files}"
    total = sum(files.values())
    assert total <= 25 * 2**20, f"model folder is {total / 2**20:.1f} MiB, the budget is 25"


def test_loads_offline_in_float32(loaded):
    model, tokenizer = loaded
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert model.config.model_type == "llama"
    assert {p.dtype for p in model.parameters()} == {torch.float32}, "load_model() must give float32"
    assert tokenizer.unk_token is None, "byte-level BPE needs no unknown token"


def test_answers_heldout_world_questions(loaded):
    from factinject.testbed.evaluate import evaluate

    model, tokenizer = loaded
    rows = random.Random(7).sample(testbed.load_heldout(), 40)
    result = evaluate(model, tokenizer, rows, batch_size=40)
    misses = [(r["question"], a) for r, a in zip(rows, result["answers"]) if r["answer_key"].lower() not in a.lower()]
    assert result["accuracy"] >= 0.85, f"held-out accuracy {result['correct']}/{result['n']}; misses: {misses}"


def test_declines_what_it_cannot_know(loaded):
    """Questions from outside the world get the fixed refusal: a stable answer, so
    that "locality" after an injection measures change, not noise."""
    from factinject.testbed.evaluate import evaluate

    model, tokenizer = loaded
    rows = random.Random(7).sample(testbed.load_unknown("heldout"), 40)
    result = evaluate(model, tokenizer, rows, batch_size=40)
    assert result["accuracy"] >= 0.85, f"declined {result['correct']}/{result['n']}"


def test_generation_stops_at_end_token(loaded):
    model, tokenizer = loaded
    row = testbed.load_heldout()[0]
    ids = tokenizer.apply_chat_template([{"role": "user", "content": row["question"]}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=60)  # the generation config alone must stop it
    new = out[0, ids["input_ids"].shape[1]:].tolist()
    assert new[-1] == tokenizer.eos_token_id and len(new) < 60, f"did not stop at <|end|>: {tokenizer.decode(new)!r}"


def test_eos_pad_and_generation_config(loaded):
    model, tokenizer = loaded
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    pad = tokenizer.convert_tokens_to_ids("<|pad|>")
    assert tokenizer.eos_token == "<|end|>" and tokenizer.eos_token_id == end
    assert tokenizer.pad_token == "<|pad|>" and pad != end, "pad must be its own token"
    gen = json.loads((testbed.model_dir() / "generation_config.json").read_text())
    assert gen["eos_token_id"] == end and gen["pad_token_id"] == pad, gen
    assert gen.get("do_sample") is False, "greedy by default"
    assert model.generation_config.eos_token_id == end
    for tok in ("<|bos|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|pad|>"):
        assert len(tokenizer.encode(tok, add_special_tokens=False)) == 1, f"{tok} must be one special token"


# ----------------------------------------------------------------- chat template


@pytest.mark.parametrize("history", [False, True])
def test_assistant_mask_is_exactly_answer_and_end(loaded, history):
    _, tokenizer = loaded
    answer = "Mira Talen was born in Oskavel."
    messages = [{"role": "user", "content": "Where was Mira Talen born?"}, {"role": "assistant", "content": answer}]
    if history:
        messages = [{"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello!"}] + messages
    enc = tokenizer.apply_chat_template(messages, return_assistant_tokens_mask=True, return_dict=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    assert any(mask), "empty assistant mask: TRL's assistant_only_loss would train on nothing"
    # Contiguous masked runs, one per assistant turn, each the content plus <|end|>.
    runs, cur = [], []
    for i, m in zip(ids, mask):
        if m:
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    expected = [m["content"] + "<|end|>" for m in messages if m["role"] == "assistant"]
    assert [tokenizer.decode(r) for r in runs] == expected


def test_generation_prompt(loaded):
    _, tokenizer = loaded
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi!"}], add_generation_prompt=True, tokenize=False)
    assert text == "<|bos|><|user|>Hi!<|end|><|assistant|>", text
    plain = tokenizer.apply_chat_template([{"role": "user", "content": "Hi!"}], tokenize=False)
    assert not plain.endswith("<|assistant|>")


@pytest.mark.parametrize("text", UTF8_SAMPLES)
def test_any_utf8_round_trips(loaded, text):
    _, tokenizer = loaded
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    assert max(ids) < len(tokenizer), "ids inside the vocabulary"


# ----------------------------------------------------------------- determinism


def test_world_generator_is_deterministic():
    a, b = W.generate_world(99), W.generate_world(99)
    assert a == b, "same seed, different world"
    assert W.generate_world(100) != a, "the seed is ignored"


def test_committed_world_is_the_default_seed_output():
    """world.json is what the build script makes, and the rows derived from it are the
    rows the committed model was trained and checked on (build_info.json keeps their hash)."""
    from factinject.testbed.pretrain import rows_fingerprint

    world = W.generate_world(W.DEFAULT_SEED)
    assert testbed.load_world()["entities"] == world["entities"], "world.json is stale: run `factinject testbed build`"
    train, heldout, unseen = W.world_rows(world)
    assert testbed.load_world_train() == train and testbed.load_heldout() == heldout and testbed.load_unseen() == unseen
    chat_train, chat_heldout = W.chat_rows()
    unknown_train, unknown_heldout = W.unknown_rows(world, W.DEFAULT_SEED)
    splits = {"train": train, "heldout": heldout, "unseen": unseen, "chat_train": chat_train,
              "chat_heldout": chat_heldout, "unknown_train": unknown_train, "unknown_heldout": unknown_heldout}
    info = json.loads((testbed.model_dir() / "build_info.json").read_text())
    assert info["rows_sha256"] == rows_fingerprint(splits), \
        "the world's wordings changed since the model was built: rebuild it (`factinject testbed build`)"


def test_loaded_rows_are_copies():
    rows = testbed.load_heldout()
    rows[0]["question"] = "changed"
    assert testbed.load_heldout()[0]["question"] != "changed", "a caller changed the cached world rows"


def _tiny_build(out: Path):
    from factinject.testbed.pretrain import BuildConfig, build

    return build(BuildConfig(shape="tiny", steps=12, eval_limit=0), out / "model", out / "world")


def test_rebuild_with_same_seed_is_identical(tmp_path):
    from safetensors.torch import load_file

    _tiny_build(tmp_path / "a")
    _tiny_build(tmp_path / "b")
    tok_a = (tmp_path / "a/model/tokenizer.json").read_bytes()
    assert tok_a == (tmp_path / "b/model/tokenizer.json").read_bytes(), "tokenizer.json differs between rebuilds"
    # The tokenizer does not depend on the model's size: it must equal the committed one.
    assert tok_a == (testbed.model_dir() / "tokenizer.json").read_bytes(), "committed tokenizer.json is stale"
    for name in ("chat_template.jinja", "tokenizer_config.json", "generation_config.json"):
        assert (tmp_path / "a/model" / name).read_text() == (tmp_path / "b/model" / name).read_text(), name
    wa = load_file(str(tmp_path / "a/model/model.safetensors"))
    wb = load_file(str(tmp_path / "b/model/model.safetensors"))
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst < 1e-5, f"weights differ by up to {worst} between same-seed rebuilds"


# ----------------------------------------------------------------- the world's shape


def test_world_size_attributes_and_phrasings():
    from factinject.testbed.relations import RELATIONS, wordings

    world = testbed.load_world()
    ents = world["entities"]
    assert len(ents) >= 200, f"only {len(ents)} entities"
    kinds = {e["kind"] for e in ents}
    assert {"person", "company", "product", "project", "city", "event"} <= kinds, kinds
    assert len({e["name"] for e in ents}) == len(ents), "entity names are unique"
    for e in ents:
        assert len(e["attributes"]) >= 4, f"{e['name']} has {len(e['attributes'])} attributes"
    assert len(RELATIONS) >= 60, f"only {len(RELATIONS)} relation types"
    # The relations the fact sheets use, so the testbed knows how people ask about them.
    assert {"purpose", "contributing", "license", "maintainer", "repository"} <= set(W.ATTRIBUTES_BY_KIND["project"])
    trained_wordings = defaultdict(set)
    for r in testbed.load_world_train():
        trained_wordings[r["attribute"]].add(r["phrasing"])
    for name in RELATIONS:
        pool, unseen = wordings(name)
        assert len(trained_wordings[name]) >= 10, f"{name}: trained in fewer than 10 wordings"
        assert unseen and not set(unseen) & set(pool), f"{name}: needs wordings never trained"
        assert all(p.count("{subject}") == 1 for p in pool + unseen), f"{name}: one subject per wording"
    for intent, (_, _, phrasings) in W.CHAT_INTENTS.items():
        assert len(set(phrasings)) >= 6, f"chat intent {intent}: fewer than 6 phrasings"


def test_unseen_wordings_are_never_trained():
    trained = {r["question"] for r in testbed.load_world_train() + testbed.load_unknown("train")}
    unseen = testbed.load_unseen()
    assert unseen and not {r["question"] for r in unseen} & trained
    trained_wordings = {r["phrasing"] for r in testbed.load_world_train()}
    assert not {r["phrasing"] for r in unseen} & trained_wordings, "an unseen wording is trained for some entity"
    facts_trained = {(r["entity"], r["attribute"]) for r in testbed.load_world_train()}
    assert all((r["entity"], r["attribute"]) in facts_trained for r in unseen), "the fact itself is trained"


def test_heldout_phrasings_are_never_trained_for_that_fact():
    train, heldout = testbed.load_world_train(), testbed.load_heldout()
    trained = {(r["entity"], r["attribute"], r["phrasing"]) for r in train}
    leaked = [r for r in heldout if (r["entity"], r["attribute"], r["phrasing"]) in trained]
    assert not leaked, f"{len(leaked)} held-out rows are also trained, e.g. {leaked[:2]}"
    assert not {r["question"] for r in train} & {r["question"] for r in heldout}, "a question text is in both splits"
    # ...but every held-out phrasing is trained for other entities, and every
    # held-out fact is trained in other phrasings: the split tests wording only.
    phrasings_trained = {r["phrasing"] for r in train}
    facts_trained = {(r["entity"], r["attribute"]) for r in train}
    for r in heldout:
        assert r["phrasing"] in phrasings_trained, f"phrasing {r['phrasing']} is never trained"
        assert (r["entity"], r["attribute"]) in facts_trained, f"fact {r['entity']}/{r['attribute']} is never trained"
    per_fact = defaultdict(set)
    for r in train + heldout:
        per_fact[(r["entity"], r["attribute"])].add(r["phrasing"])
    assert min(len(v) for v in per_fact.values()) >= 6, "every question in >= 6 phrasings"
    for r in train + heldout:
        assert r["answer_key"] in r["answer"], f"answer without its key: {r}"
        assert set(r) >= {"question", "answer", "answer_key", "entity", "attribute", "phrasing"}


def test_answer_keys_cannot_match_by_accident():
    """A wrong answer must not contain the right key: no key of an attribute contains another."""
    keys = defaultdict(set)
    for r in testbed.load_heldout():
        keys[r["attribute"]].add(r["answer_key"].lower())
    for attr, ks in keys.items():
        clashes = [(a, b) for a in ks for b in ks if a != b and a in b]
        assert not clashes, f"{attr}: keys inside other keys {clashes[:3]}"


def _norm(template: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"\{[^}]*\}", "{}", template)).strip().lower()


def test_phrasings_are_not_the_expanders_templates():
    templates = pytest.importorskip("factinject.expand.templates")
    theirs = getattr(templates, "QUESTION_TEMPLATES", None)
    if theirs is None:
        pytest.skip("factinject.expand.templates has no QUESTION_TEMPLATES")
    from factinject.testbed.relations import all_wordings

    theirs = {_norm(t) for t in theirs}
    mine = all_wordings() + [q for _, _, qs in W.CHAT_INTENTS.values() for q in qs]
    same = [p for p in mine if _norm(p) in theirs]
    assert not same, f"testbed phrasings copied from the expander: {same}"


def test_few_exam_questions_are_world_wordings():
    """The shipped exams (facts/*.exam.jsonl) ask in the user's words. Some are also how
    the world asks about its own entities ("lumen transit repo": the world knows how
    people ask, as a pretrained model does), but most must not be, or the exam would
    measure the world's wordings rather than how far an injected fact generalises."""
    from factinject.testbed.relations import all_wordings

    mine = {_loose(w.replace("{subject}", "SUBJ")) for w in all_wordings()}
    facts = Path(testbed.__file__).resolve().parents[2] / "facts"
    same, total = [], 0
    for exam in sorted(facts.glob("*.exam.jsonl")):
        sheet = (facts / exam.name.replace(".exam.jsonl", ".md")).read_text(encoding="utf-8")
        names = [n.strip() for line in sheet.splitlines() for n in
                 ([line[2:]] if line.startswith("# ") else line[8:].split(",") if line.startswith("aliases:") else [])]
        for line in exam.read_text(encoding="utf-8").splitlines():
            q = json.loads(line)["question"]
            total += 1
            for n in sorted(names, key=len, reverse=True):
                q = re.sub(re.escape(n), "SUBJ", q, flags=re.I)
            if _loose(q) in mine:
                same.append(q)
    assert total and len(same) <= 0.1 * total, f"{len(same)}/{total} exam questions are world wordings: {same}"


def test_training_prompts_avoid_the_probes_control_sets():
    """The probe's own control prompts (factinject/data) must stay unseen by the testbed."""
    data = Path(testbed.__file__).resolve().parents[1] / "data"
    theirs = set()
    for name, field in (("control_prompts.jsonl", "prompt"), ("known_answers.jsonl", "question")):
        if (data / name).exists():
            theirs |= {_loose(json.loads(line)[field]) for line in open(data / name, encoding="utf-8") if line.strip()}
    if not theirs:
        pytest.skip("no control sets in factinject/data")
    mine = testbed.load_world_train() + testbed.load_unseen() + testbed.load_chat("train") + testbed.load_unknown("train")
    mine += testbed.load_heldout() + testbed.load_chat("heldout") + testbed.load_unknown("heldout")
    same = sorted({r["question"] for r in mine if _loose(r["question"]) in theirs})
    assert not same, f"testbed prompts that are also probe control prompts: {same}"


def test_a_share_of_every_split_is_typed_casually():
    """People type "julfulib license": the world asks that way too, in every split, so a
    name is known however it is cased (a model that never saw a name in lower case reads
    other tokens and answers another fact or the refusal)."""
    splits = {"train": testbed.load_world_train(), "heldout": testbed.load_heldout(), "unseen": testbed.load_unseen(),
              "unknown": testbed.load_unknown("train") + testbed.load_unknown("heldout")}
    for name, rows in splits.items():
        typed = [r for r in rows if r["casual"]]
        assert 0.18 <= len(typed) / len(rows) <= 0.32, f"{name}: {len(typed)}/{len(rows)} typed casually"
        for r in typed:
            assert r["question"] == W.casual(r["question"]), f"{name}: {r['question']!r} is not typed casually"
        assert all(r["question"] != r["question"].lower() for r in rows if not r["casual"] and r["kind"] != "unknown"), \
            f"{name}: a cased question lost its capitals"
    assert W.casual("Where is the code of Julfulib?") == "where is the code of julfulib"
    # The same wording is typed both ways across entities, so neither form is a cue for the answer.
    forms = {}
    for r in splits["train"]:
        forms.setdefault(r["phrasing"], set()).add(r["casual"])
    assert sum(len(v) == 2 for v in forms.values()) >= 0.5 * len(forms), "few wordings are seen both cased and casually"


def test_unknown_names_are_not_world_names():
    names = {e["name"].lower() for e in testbed.load_world()["entities"]}
    strangers = [r for r in testbed.load_unknown("train") + testbed.load_unknown("heldout") if r["attribute"] == "stranger"]
    assert strangers, "no questions about names outside the world"
    for r in strangers:
        assert not any(n in r["question"].lower() for n in names), f"a world name in {r['question']!r}"


def _loose(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


# ----------------------------------------------------------------- CLI


def test_cli_import_is_light():
    code = ("import sys, factinject.testbed.cli, factinject.testbed; "
            "heavy = [m for m in ('torch', 'transformers', 'tokenizers', 'numpy') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_eval_prints_one_json_line():
    from click.testing import CliRunner

    from factinject.testbed.cli import testbed as group

    result = CliRunner().invoke(group, ["eval", "--limit", "16"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line, got {lines}"
    report = json.loads(lines[0])
    assert report["n"] == 16 and 0 <= report["heldout_accuracy"] <= 1
    assert {"train_accuracy", "unseen_accuracy", "params", "seconds", "per_relation"} <= set(report)
    assert report["casual_n"] + report["cased_n"] == 32, "every held-out and unseen question is casual or cased"
    for rel, splits in report["per_relation"].items():
        assert set(splits) <= {"heldout", "unseen"} and all(0 <= s["accuracy"] <= 1 for s in splits.values()), rel
