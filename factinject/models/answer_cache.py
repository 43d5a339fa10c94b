"""The base model's answers, kept across runs: a second sheet on the same base pays only
for prompts the base model has never been asked.

Greedy answers of one model are a pure function of what is hashed into the key: the
weights (sha256 of every file of the model folder, computed once per file version),
the chat template, the precision it is loaded in, the generation settings (greedy, the
answer budget), the engine and the versions of the libraries that compute them, the
device, and this file's format version. Under one key, each answer is stored by its
prompt's text.

Layout: `<cache>/answers/<key digest>/key.json` (the key in full, for a person) and up to
256 shards `<xx>.json`, named by the first two hex digits of the prompt's sha256, each
`{"format", "key", "answers": {sha256(prompt): [prompt, answer, finished]}}`. Writers take
the key folder's lock and merge their answers into the shard they read under it, then
rename it into place, so two runs at once lose nothing and a reader never sees half a
file. A shard that does not parse, or holds another key or format, is ignored with one
warning and rewritten by the next writer.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from factinject.models import cache_home
from factinject.rundir.files import sha256_file, write_text_atomic

FORMAT = 1  # part of every key: bump when what is stored, or how answers are made, changes
ANSWERS = "answers"
_warned: set[str] = set()


ROOT_ENV = "FACTINJECT_ANSWER_CACHE"  # a folder of its own for the answers, else <cache folder>/answers


def answers_root() -> Path:
    return Path(os.environ[ROOT_ENV]).expanduser() if os.environ.get(ROOT_ENV) else cache_home() / ANSWERS


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered by (path, size, mtime, inode) in the cache folder: a
    16 GB base is hashed once per version of its files, not at every run."""
    path = Path(path).resolve()
    st = path.stat()
    memo_key = _sha(json.dumps([str(path), st.st_size, st.st_mtime_ns, st.st_ino]))
    memo = answers_root() / "file-hashes" / memo_key[:2] / memo_key
    with contextlib.suppress(OSError, ValueError):
        return json.loads(memo.read_text(encoding="utf-8"))["sha256"]
    value = sha256_file(path)
    with contextlib.suppress(OSError):
        write_text_atomic(memo, json.dumps({"path": str(path), "sha256": value}) + "\n")
    return value


def model_files_sha256(folder: Path) -> dict[str, str]:
    """Every file that decides a model's answers: weights, config, tokenizer, chat template,
    generation config (not READMEs or licences)."""
    folder = Path(folder)
    wanted = [p for p in sorted(folder.iterdir()) if p.is_file()
              and p.suffix in (".safetensors", ".json", ".jinja", ".model", ".txt") and p.name != "README.md"]
    return {p.name: file_sha256(p) for p in wanted}


def local_folder(path: str, local: bool) -> Path | None:
    """The folder holding a model's files: itself, or a hub model's downloaded snapshot
    (None before it is downloaded: its answers are then not cached this time)."""
    if local:
        return Path(path)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path, local_files_only=True))
    except Exception:  # noqa: BLE001 - not downloaded yet, or no hub library: no key, no cache
        return None


def base_answer_key(*, model_folder: str | Path, chat_template: str | None, precision: str, max_new_tokens: int,
                    engine: str, versions: dict[str, str], device: str) -> dict:
    """Everything that decides the base model's greedy answers, but the prompt."""
    return {"format": FORMAT, "model_files": model_files_sha256(Path(model_folder)),
            "chat_template_sha256": _sha(chat_template) if chat_template else None,
            "precision": precision, "generation": {"decoding": "greedy", "max_new_tokens": max_new_tokens},
            "engine": engine, "versions": dict(sorted(versions.items())), "device": device}


def library_versions(*names: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


class AnswerCache:
    """The stored answers of one model under one key (see the module's docstring)."""

    def __init__(self, key: dict, root: Path | None = None):
        self.key = key
        self.digest = _sha(json.dumps(key, sort_keys=True))
        self.folder = (root or answers_root()) / self.digest

    def _shard(self, prompt_sha: str) -> Path:
        return self.folder / f"{prompt_sha[:2]}.json"

    def _read(self, path: Path) -> dict[str, list]:
        """A shard's answers; {} when it is missing, and (with one warning) when it is damaged
        or written under another key or format: the next writer replaces it."""
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            ok = (isinstance(data, dict) and data.get("format") == FORMAT and data.get("key") == self.key
                  and isinstance(data.get("answers"), dict))
            answers = data["answers"] if ok else None
            if answers is not None and not all(
                    isinstance(v, list) and len(v) == 3 and isinstance(v[0], str) and isinstance(v[1], str)
                    and isinstance(v[2], bool) and _sha(v[0]) == k for k, v in answers.items()):
                answers = None
        except (OSError, ValueError):
            answers = None
        if answers is None:
            if str(path) not in _warned:
                _warned.add(str(path))
                print(f"warning: ignoring a damaged or foreign entry of the answer cache ({path}); "
                      "its answers are generated again and the entry rewritten", file=sys.stderr)
            return {}
        return answers

    def get(self, prompts: Iterable[str]) -> dict[str, tuple[str, bool]]:
        """{prompt: (answer, finished)} for every prompt already stored."""
        by_shard: dict[Path, list[tuple[str, str]]] = {}
        for prompt in dict.fromkeys(prompts):
            sha = _sha(prompt)
            by_shard.setdefault(self._shard(sha), []).append((prompt, sha))
        found = {}
        for path, wanted in by_shard.items():
            stored = self._read(path)
            for prompt, sha in wanted:
                if sha in stored:
                    found[prompt] = (stored[sha][1], stored[sha][2])
        return found

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def put(self, answers: dict[str, tuple[str, bool]]) -> None:
        """Store {prompt: (answer, finished)}: merged, under the lock, into what is there."""
        if not answers:
            return
        by_shard: dict[Path, dict[str, list]] = {}
        for prompt, (answer, finished) in answers.items():
            sha = _sha(prompt)
            by_shard.setdefault(self._shard(sha), {})[sha] = [prompt, answer, bool(finished)]
        with self._locked():
            if not (self.folder / "key.json").exists():
                write_text_atomic(self.folder / "key.json", json.dumps(self.key, indent=2, sort_keys=True) + "\n")
            for path, new in by_shard.items():
                merged = {**self._read(path), **new}
                write_text_atomic(path, json.dumps({"format": FORMAT, "key": self.key, "answers": merged},
                                                   ensure_ascii=False))


def cached_generate(cache: AnswerCache | None, prompts: list[str], generate) -> tuple[list[str], list[bool], int]:
    """(answers, finished, how many came from the cache): `generate(missing)` returns
    (answers, finished) for the prompts the cache does not hold; with no cache, for all."""
    budget = 0  # one budget: the cache's own key holds it
    return cached_generate_budgeted(lambda _: cache, prompts, [budget] * len(prompts),
                                    lambda missing, _: generate(missing))


def cached_generate_budgeted(cache_for, prompts: list[str], budgets: list[int],
                             generate) -> tuple[list[str], list[bool], int]:
    """cached_generate with an answer budget per prompt (each probe set has its own): the
    answers of each budget live under that budget's key, `cache_for(budget)` (None: not
    cached). `generate(missing, their budgets)` is called once, for every missing prompt."""
    assert len(budgets) == len(prompts), f"{len(budgets)} budgets for {len(prompts)} prompts"
    wanted = dict.fromkeys(zip(prompts, budgets))
    found: dict[tuple[str, int], tuple[str, bool]] = {}
    caches = {b: cache_for(b) for b in dict.fromkeys(budgets)}
    for b, cache in caches.items():
        if cache is not None:
            found.update({(p, b): v for p, v in cache.get([p for p, pb in wanted if pb == b]).items()})
    missing = [pb for pb in wanted if pb not in found]
    if missing:
        answers, finished = generate([p for p, _ in missing], [b for _, b in missing])
        new = {pb: (a, bool(f)) for pb, a, f in zip(missing, answers, finished, strict=True)}
        for b, cache in caches.items():
            if cache is not None:
                cache.put({p: v for (p, pb), v in new.items() if pb == b})
        found.update(new)
    hits = len(wanted) - len(missing)
    pairs = list(zip(prompts, budgets))
    return [found[pb][0] for pb in pairs], [found[pb][1] for pb in pairs], hits


def cache_size(root: Path | None = None) -> tuple[int, int]:
    """(bytes, entries): the answers stored under every key."""
    root = root or answers_root()
    total, entries = 0, 0
    for path in root.rglob("*.json") if root.exists() else []:
        with contextlib.suppress(OSError):
            total += path.stat().st_size
            if len(path.stem) == 2 and path.parent.parent == root:
                with contextlib.suppress(ValueError):
                    entries += len(json.loads(path.read_text(encoding="utf-8")).get("answers", {}))
    return total, entries
