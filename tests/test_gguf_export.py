"""GGUF out: the injected testbed model as one GGUF file with an Ollama Modelfile, read back
by the gguf package and by transformers, and answered by a real llama.cpp (xllamacpp)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml
from click.testing import CliRunner
from conftest import FACTS, REPO

from factinject.cli import main

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]  # trains the testbed once


def invoke(root, *args, code: int = 0):
    cwd = os.getcwd()
    os.chdir(root)
    try:
        result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    finally:
        os.chdir(cwd)
    assert result.exit_code == code, result.output
    return result


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """tinyllm injected into the testbed, merged, then written as q8_0 (with the merge) and f16."""
    root = tmp_path_factory.mktemp("gguf")
    recipe = yaml.safe_load((REPO / "recipes" / "testbed-cpu.yaml").read_text())
    recipe["train"]["max_epochs"] = 3
    (root / "fast.yaml").write_text(yaml.safe_dump(recipe))
    shutil.copy(FACTS / "tinyllm.md", root / "tinyllm.md")
    invoke(root, "expand", "tinyllm.md")
    invoke(root, "train", "--recipe", "fast.yaml")
    merged_and_q8 = invoke(root, "export", "--merged", "--gguf", "q8_0").output
    f16 = invoke(root, "export", "--gguf", "f16").output
    return root / "exports" / "tinyllm", merged_and_q8 + f16


def test_the_gguf_reads_back_with_its_architecture_tokenizer_and_chat_template(exported):
    run, output = exported
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run / "merged")
    for qtype in ("q8_0", "f16"):
        assert f"GGUF ({qtype}, llama" in output and f"gguf-{qtype}/Modelfile" in output
        reader = gguf.GGUFReader(str(run / f"gguf-{qtype}" / f"model-{qtype}.gguf"))
        field = lambda key: reader.fields[key].contents()  # noqa: E731
        assert field("general.architecture") == "llama"
        assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "gpt-2"
        assert field("tokenizer.chat_template") == tokenizer.chat_template
        assert len(field("tokenizer.ggml.tokens")) == len(tokenizer.get_vocab())
        assert field("tokenizer.ggml.eos_token_id") == tokenizer.eos_token_id
        assert field("tokenizer.ggml.merges"), "byte-level BPE needs its merges"
        assert field("tokenizer.ggml.add_bos_token") is True, "the testbed's template starts with its BOS"
        names = {t.name: t for t in reader.tensors}
        assert "output.weight" not in names, "tied embeddings: llama.cpp reads token_embd"
        assert all(t.tensor_type.name == "F32" for t in reader.tensors if len(t.shape) == 1)
        big = names["blk.0.ffn_down.weight"].tensor_type.name
        assert big == qtype.upper(), big
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["export"]["gguf"]) == {"q8_0", "f16"}
    assert manifest["export"]["gguf"]["f16"]["adapter_files"] == manifest["train"]["adapter_files"]


def test_transformers_loads_the_gguf_back_as_the_merged_weights(exported):
    run, _ = exported
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(run / "merged", dtype=torch.float32).state_dict()
    for qtype, tolerance in (("f16", 0.0), ("q8_0", 1 / 127)):
        folder = run / f"gguf-{qtype}"
        back = AutoModelForCausalLM.from_pretrained(folder, gguf_file=f"model-{qtype}.gguf",
                                                    dtype=torch.float32).state_dict()
        for key, weight in merged.items():
            want = weight.half().float() if qtype == "f16" else weight
            # q8_0: each block of 32 scaled by its largest value over 127, so an error of half a step
            bound = tolerance * weight.abs().max().item() if tolerance else 0.0
            assert (back[key] - want).abs().max().item() <= bound + 1e-7, (qtype, key)


def test_the_modelfile_has_the_template_and_stops_at_the_end_of_turn(exported):
    run, _ = exported
    text = (run / "gguf-q8_0" / "Modelfile").read_text()
    assert "FROM ./model-q8_0.gguf" in text
    assert 'TEMPLATE """' in text and "{{ .Prompt }}" in text and "<|user|>{{ .Prompt }}<|end|><|assistant|>" in text
    assert 'PARAMETER stop "<|end|>"' in text


def test_a_second_export_is_refused_without_force_and_changes_nothing(exported):
    run, _ = exported
    folder = run / "gguf-f16"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    refused = invoke(run.parent.parent, "export", "--gguf", "f16", code=2)
    assert "an export already exists here" in refused.output and "--force" in refused.output
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert not [p for p in run.iterdir() if p.name.startswith(".gguf-f16")], "no temporary folder left"


def test_llamacpp_answers_the_trained_questions_as_the_merged_model(exported):
    """The file the user will run, answered by a real llama.cpp: the same verdicts as the
    merged model in transformers (f16: every one; q8_0: at least 95 %)."""
    xllamacpp = pytest.importorskip("xllamacpp")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from factinject.backends.hf_generate import generate
    from factinject.rundir.files import Run, read_split
    from factinject.scoring import contains_key

    run, _ = exported
    rows = read_split(Run(run), "train")[:40]
    tokenizer = AutoTokenizer.from_pretrained(run / "merged")
    model = AutoModelForCausalLM.from_pretrained(run / "merged", dtype=torch.float32)
    chats = [[{"role": "user", "content": r["messages"][0]["content"]}] for r in rows]
    reference, _ = generate(model, tokenizer, chats, max_new_tokens=48)
    for qtype, need in (("f16", 1.0), ("q8_0", 0.95)):
        params = xllamacpp.CommonParams()
        params.model.path = str(run / f"gguf-{qtype}" / f"model-{qtype}.gguf")
        params.n_ctx, params.n_parallel, params.cpuparams.n_threads = 512, 1, 2
        params.verbosity = -1
        server = xllamacpp.Server(params)
        answers = []
        for chat in chats:
            ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=False)
            out = server.handle_completions({"prompt": ids, "n_predict": 48, "temperature": 0.0})
            answers.append(out["choices"][0]["text"].strip())
        del server
        same = sum(contains_key(a, r["answer_key"]) == contains_key(b, r["answer_key"])
                   for a, b, r in zip(answers, reference, rows))
        assert same >= need * len(rows), (qtype, same, list(zip(answers, reference))[:5])
        assert sum(contains_key(a, r["answer_key"]) for a, r in zip(answers, rows)) >= 0.5 * len(rows), \
            "the injected facts come back through llama.cpp"


def test_the_export_checks_each_gguf_in_llamacpp_before_publishing_it(exported):
    """export --gguf asks llama.cpp the parity prompts on the new file and the merged model
    the same in transformers: f16 gives every verdict, q8_0 at least 95 %."""
    pytest.importorskip("xllamacpp")
    run, output = exported
    assert output.count("checked in llama.cpp:") == 2, output
    manifest = json.loads((run / "manifest.json").read_text())
    for qtype, need in (("f16", 1.0), ("q8_0", 0.95)):
        parity = manifest["export"]["gguf"][qtype]["parity"]
        assert parity["engine"] == "llama.cpp" and parity["n"] >= parity["verdicts"]["n"] > 20, parity
        assert parity["verdicts"]["share"] >= need, (qtype, parity)


def test_a_gguf_below_the_verdict_bound_is_refused(tmp_path):
    from factinject.errors import FactinjectError
    from factinject.export.stage import check_gguf_parity

    low = {"verdicts": {"share": 0.9, "count": 36, "n": 40}}
    with pytest.raises(FactinjectError, match="only 36/40 fact questions"):
        check_gguf_parity(low, "q8_0", tmp_path)
    assert check_gguf_parity(low, "q4_0", tmp_path) is low  # q4_0: reported, not bound


def test_probe_answers_the_gguf_export_with_llamacpp(exported, tmp_path, monkeypatch):
    """probe --backend llamacpp: after = the run's GGUF in llama.cpp, before = the base written
    as GGUF of the same type (once, in the cache); recall as the hf engine's on the merge."""
    pytest.importorskip("xllamacpp")
    monkeypatch.setenv("FACTINJECT_CACHE", str(tmp_path / "cache"))
    run, _ = exported
    root = run.parent.parent
    copies = {name: shutil.copytree(run, tmp_path / name, ignore=shutil.ignore_patterns(".lock", "reports"))
              for name in ("hf", "llamacpp")}
    refused = invoke(root, "probe", "--run", copies["llamacpp"], "--backend", "llamacpp", code=2).output
    assert "GGUF exports of 2 types (f16, q8_0)" in refused and "--gguf TYPE" in refused
    assert "--gguf picks" in invoke(root, "probe", "--run", copies["hf"], "--gguf", "f16", code=2).output
    invoke(root, "probe", "--run", copies["hf"], "--backend", "hf")
    out = invoke(root, "probe", "--run", copies["llamacpp"], "--backend", "llamacpp", "--gguf", "q8_0").output
    assert "through the gguf model (llamacpp, q8_0)" in out
    hf, llamacpp = (json.loads((copies[n] / "reports" / "report.json").read_text()) for n in ("hf", "llamacpp"))
    assert llamacpp["model"]["tuned"] == "gguf" and llamacpp["model"]["tuned_precision"] == "q8_0"
    assert llamacpp["engines"] == {"base": "llamacpp", "gguf": "llamacpp"}
    assert llamacpp["after"]["parity"]["source"] == "export --gguf"
    assert list((tmp_path / "cache" / "llamacpp").glob("*/model-q8_0.gguf")), "the base written as GGUF, cached"
    for side in ("before", "after"):
        for metric in ("recall_trained", "recall_heldout"):
            ours, theirs = llamacpp[side][metric]["share"], hf[side][metric]["share"]
            assert abs(ours - theirs) <= 0.05, (side, metric, ours, theirs)
    assert abs(llamacpp["after"]["locality_tokens"]["share"] - hf["after"]["locality_tokens"]["share"]) <= 0.01, \
        "both read the adapter, in hf"


def test_probe_refuses_a_stale_gguf(exported, tmp_path):
    pytest.importorskip("xllamacpp")
    run, _ = exported
    copy = shutil.copytree(run, tmp_path / "r", ignore=shutil.ignore_patterns(".lock", "reports"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["export"]["gguf"]["q8_0"]["adapter_files"] = {"adapter_model.safetensors": "0" * 64}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    out = invoke(run.parent.parent, "probe", "--run", copy, "--backend", "llamacpp", "--gguf", "q8_0", code=2).output
    assert "made from an earlier adapter" in out and "--gguf q8_0 --force" in out


def test_the_test_command_has_a_real_llamacpp():
    """The README's test command installs the gguf extra: there the llama.cpp checks must
    run, not skip (xllamacpp needs the system's libgomp1)."""
    if not os.environ.get("FACTINJECT_REALMODEL"):
        pytest.skip("only under the README's test command")
    import xllamacpp  # noqa: F401


def _ollama_prompt(template: str, prompt: str) -> str:
    """What Ollama renders for one user message and no SYSTEM (Go template, the parts used)."""
    import re

    text = re.sub(r"\{\{ if \.System \}\}.*?\{\{ else \}\}(.*?)\{\{ end \}\}", r"\1", template, flags=re.S)
    return text.split("{{ .Response }}")[0].replace("{{ .Prompt }}", prompt)


@pytest.mark.parametrize("family", ["llama3.1", "qwen2.5", "gemma2"])
def test_each_recipe_family_writes_loads_back_and_answers_in_llamacpp(family, tmp_path):
    """Every family a recipe ships, on its fixture: the GGUF loads back into transformers
    as the same weights (f16 exactly, q8_0 within its rounding), the Modelfile's TEMPLATE
    renders the prompt the chat template does, and llama.cpp answers as transformers does
    on the same f16 weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from factinject.models.gguf_out import modelfile, write_gguf
    from factinject.models.fixtures import fixture_path

    source = fixture_path(f"fixture:{family}")
    reference = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).state_dict()
    for qtype in ("f16", "q8_0"):
        write_gguf(source, tmp_path / f"model-{qtype}.gguf", qtype, name=family)
        back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=f"model-{qtype}.gguf",
                                                    dtype=torch.float32).state_dict()
        assert set(back) >= set(reference) - {"lm_head.weight"}
        for key, weight in reference.items():
            if key not in back:
                continue
            want = weight.half().float() if qtype == "f16" else weight
            bound = 0.0 if qtype == "f16" else weight.abs().max().item() / 127
            assert (back[key] - want).abs().max().item() <= bound + 1e-7, (family, qtype, key)
    tokenizer = AutoTokenizer.from_pretrained(source)
    template = modelfile("model-f16.gguf", tokenizer).split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    chat = [{"role": "user", "content": "Who maintains Zorblat?"}]
    expected = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    if tokenizer.bos_token and expected.startswith(tokenizer.bos_token):
        expected = expected[len(tokenizer.bos_token):]  # llama.cpp adds the BOS token itself
    assert _ollama_prompt(template, "Who maintains Zorblat?") == expected

    xllamacpp = pytest.importorskip("xllamacpp")
    from factinject.backends.hf_generate import generate
    from factinject.backends.loading import softcapped_attention

    # The reference: the fixture itself on the f16 weights the file holds, with the attention
    # factinject runs it with (eager for Gemma-2's soft-capping; transformers' GGUF loader
    # would drop Gemma-2's query_pre_attn_scalar).
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=torch.float32, attn_implementation="eager" if softcapped_attention(str(source), True) else "sdpa")
    with torch.no_grad():
        for weight in model.parameters():
            weight.copy_(weight.half().float())
    questions = ["Who maintains Zorblat?", "What is the capital of France?", "Tell me about rivers.",
                 "Write a haiku about snow.", "What is 2 + 2?", "Name a colour.", "Why is the sky blue?",
                 "Who wrote Hamlet?"]
    chats = [[{"role": "user", "content": q}] for q in questions]
    ids_out: list = []
    ours, _ = generate(model, tokenizer, chats, max_new_tokens=16, token_ids=ids_out, batch_size=1)
    params = xllamacpp.CommonParams()
    params.model.path = str(tmp_path / "model-f16.gguf")
    params.n_ctx, params.n_parallel, params.cpuparams.n_threads = 512, 1, 2
    params.verbosity = -1
    server = xllamacpp.Server(params)
    same = 0
    for (prompt, generated), answer in zip(ids_out, ours):
        out = server.handle_completions({"prompt": list(prompt), "n_predict": 16, "temperature": 0.0})
        same += out["choices"][0]["text"].strip() == answer
    assert same == len(questions), (family, same)
