"""The answer cache (factinject/models/answer_cache.py): the base model's answers kept across
runs, keyed by everything that decides them."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
from click.testing import CliRunner

from factinject.cli import main
from factinject.models import answer_cache
from factinject.models.answer_cache import AnswerCache, base_answer_key, cached_generate


@pytest.fixture
def model_folder(tmp_path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\x08\0\0\0\0\0\0\0{}      " + bytes(range(64)))
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "tokenizer.json").write_text('{"model": {}}')
    (folder / "README.md").write_text("not part of the model")
    return folder


def key(folder: Path, **changes) -> dict:
    parts = dict(model_folder=folder, chat_template="{{ messages }}", precision="float32", max_new_tokens=64,
                 engine="hf", versions={"torch": "2.13.0", "transformers": "5.17.0"}, device="cpu")
    return base_answer_key(**{**parts, **changes})


def test_a_stored_answer_is_found(model_folder):
    cache = AnswerCache(key(model_folder))
    cache.put({"Who wrote Hamlet?": ("Shakespeare wrote it.", True), "Tell me a story.": ("Once upon a", False)})
    again = AnswerCache(key(model_folder))  # another run, same base
    assert again.get(["Tell me a story.", "Who wrote Hamlet?", "Never asked?"]) == {
        "Tell me a story.": ("Once upon a", False), "Who wrote Hamlet?": ("Shakespeare wrote it.", True)}


def change_weights(folder: Path) -> dict:
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 1  # one bit of one weight
    (folder / "model.safetensors").write_bytes(bytes(data))
    return {}


def change_tokenizer(folder: Path) -> dict:
    (folder / "tokenizer.json").write_text('{"model": {"vocab": {"a": 0}}}')
    return {}


# One case per part of the key: each alone must miss.
KEY_PARTS = {
    "weights": change_weights,
    "config": lambda f: (f / "config.json").write_text('{"model_type": "qwen2"}') and {},
    "tokenizer": change_tokenizer,
    "chat template": lambda f: {"chat_template": "{{ messages }}\n"},
    "precision": lambda f: {"precision": "4-bit"},
    "generation settings": lambda f: {"max_new_tokens": 128},
    "engine": lambda f: {"engine": "vllm"},
    "engine version": lambda f: {"versions": {"torch": "2.13.0", "transformers": "5.18.0"}},
    "device": lambda f: {"device": "NVIDIA H100 80GB HBM3"},
}


@pytest.mark.parametrize("part", list(KEY_PARTS))
def test_any_part_of_the_key_changed_is_a_miss(model_folder, part):
    AnswerCache(key(model_folder)).put({"Who wrote Hamlet?": ("Shakespeare.", True)})
    assert AnswerCache(key(model_folder)).get(["Who wrote Hamlet?"]), "the unchanged key must hit"
    changes = KEY_PARTS[part](model_folder) or {}
    assert AnswerCache(key(model_folder, **changes)).get(["Who wrote Hamlet?"]) == {}


def test_another_prompt_and_another_format_miss(model_folder, monkeypatch):
    AnswerCache(key(model_folder)).put({"Who wrote Hamlet?": ("Shakespeare.", True)})
    assert AnswerCache(key(model_folder)).get(["Who wrote Hamlet ?", "who wrote hamlet?"]) == {}
    monkeypatch.setattr(answer_cache, "FORMAT", answer_cache.FORMAT + 1)
    assert AnswerCache(key(model_folder)).get(["Who wrote Hamlet?"]) == {}


def test_readme_is_not_part_of_the_model(model_folder):
    AnswerCache(key(model_folder)).put({"q": ("a", True)})
    (model_folder / "README.md").write_text("edited")
    assert AnswerCache(key(model_folder)).get(["q"]) == {"q": ("a", True)}


@pytest.mark.parametrize("damage", ["not json", "truncated", "foreign key", "wrong prompt"])
def test_a_damaged_or_foreign_entry_is_ignored_with_one_warning_and_rewritten(model_folder, capsys, damage):
    cache = AnswerCache(key(model_folder))
    cache.put({"q1": ("a1", True)})
    shard = next(cache.folder.glob("??.json"))
    text = shard.read_text()
    shard.write_text({"not json": "<html>", "truncated": text[: len(text) // 2],
                      "foreign key": json.dumps({**json.loads(text), "key": {"someone": "else"}}),
                      "wrong prompt": text.replace('"q1"', '"q2"')}[damage])
    fresh = AnswerCache(key(model_folder))
    assert fresh.get(["q1"]) == {} and fresh.get(["q1"]) == {}
    warnings = capsys.readouterr().err
    assert warnings.count("ignoring a damaged or foreign entry of the answer cache") == 1, warnings
    fresh.put({"q1": ("a1 again", True)})
    assert AnswerCache(key(model_folder)).get(["q1"]) == {"q1": ("a1 again", True)}
    assert json.loads(shard.read_text())["key"] == cache.key


def _writer(folder: str, root: str, start: int) -> None:
    import os

    os.environ[answer_cache.ROOT_ENV] = root
    cache = AnswerCache(key(Path(folder)))
    for i in range(start, start + 150, 10):  # many small writes into the same shards
        cache.put({f"prompt {j}": (f"answer {j}", j % 2 == 0) for j in range(i, i + 10)})


def test_two_writers_at_once_lose_nothing(model_folder, empty_answer_cache):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(model_folder), str(empty_answer_cache), s)) for s in (0, 150)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    found = AnswerCache(key(model_folder)).get([f"prompt {j}" for j in range(300)])
    assert len(found) == 300 and found["prompt 7"] == ("answer 7", False)
    assert not list(AnswerCache(key(model_folder)).folder.glob("*.tmp"))


def test_cached_generate_asks_only_for_what_is_missing(model_folder):
    cache = AnswerCache(key(model_folder))
    asked = []

    def generate(prompts):
        asked.append(list(prompts))
        return [p.upper() for p in prompts], [True] * len(prompts)

    assert cached_generate(cache, ["a", "b"], generate) == (["A", "B"], [True, True], 0)
    assert cached_generate(cache, ["b", "c", "a", "c"], generate) == (["B", "C", "A", "C"], [True] * 4, 2)
    assert asked == [["a", "b"], ["c"]]
    assert cached_generate(None, ["a"], generate)[2] == 0 and asked[-1] == ["a"]  # no cache: everything asked


def test_the_cache_command_shows_and_clears(model_folder, empty_answer_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("FACTINJECT_CACHE", str(tmp_path / "cache"))
    AnswerCache(key(model_folder)).put({f"q{i}": ("a", True) for i in range(12)})
    runner = CliRunner()
    info = runner.invoke(main, ["cache", "info"])
    assert info.exit_code == 0 and "answers stored: 12" in info.output, info.output
    cleared = runner.invoke(main, ["cache", "clear"])
    assert cleared.exit_code == 0 and str(empty_answer_cache) in cleared.output
    assert "answers stored: 0" in runner.invoke(main, ["cache", "info"]).output


@pytest.mark.slow
def test_a_second_sheet_on_the_same_base_reuses_the_base_answers(workdir):
    """On the testbed: the second run's probe generates only prompts the base was never asked,
    and its answers are the ones a probe without the cache gives."""
    runner = CliRunner()
    for seed, run in ((1, "a"), (2, "b"), (2, "c")):
        done = runner.invoke(main, ["expand", str(Path(__file__).parents[1] / "facts" / "tinyllm.md"),
                                    "--run", run, "--seed", str(seed)])
        assert done.exit_code == 0, done.output
    assert runner.invoke(main, ["probe", "--run", "a", "--world-limit", "30"]).exit_code == 0
    second = runner.invoke(main, ["probe", "--run", "b", "--world-limit", "30"])
    assert second.exit_code == 0, second.output
    report = json.loads((workdir / "b" / "reports" / "report.json").read_text())
    cached = report["answers_from_cache"]["base"]
    assert 0 < cached["count"] < cached["n"], cached  # the shared prompts came from the cache, the new ones did not
    assert runner.invoke(main, ["probe", "--run", "c", "--world-limit", "30", "--no-answer-cache"]).exit_code == 0
    uncached = json.loads((workdir / "c" / "reports" / "report.json").read_text())
    assert uncached["answers_from_cache"]["base"]["count"] == 0
    rows = {p: [json.loads(line) for line in (workdir / p / "reports" / "answers.jsonl").open()] for p in "bc"}
    assert rows["b"] == rows["c"], "answers from the cache differ from answers generated anew"
