"""Peak memory of the merged export: factinject's streaming merge against PEFT's merge_and_unload.

    python bench/merge_memory.py                     # ~1.1 GB bf16 model in 9+ shards
    python bench/merge_memory.py --layers 24 --shard-mb 250

Builds (once, in --work) a randomly initialised Llama-shaped model saved in bf16
safetensors shards, and a random LoRA adapter (r=16 on all seven projections, with
non-zero B so the merge changes every targeted weight). Then, each in a fresh process
so one cannot inherit the other's memory:

  factinject  backends/merge.py: tensor by tensor from the shards into new shards
  peft        from_pretrained (bf16) + PeftModel + merge_and_unload + save_pretrained

Each reports the peak resident memory of the merge itself: the process's high-water
mark is reset (Linux /proc/self/clear_refs) after the libraries are imported, so the
figure is what the merge adds, not what importing torch costs. The bar: factinject's
peak under 1.5 x (largest shard + adapter). Both outputs are compared tensor by tensor.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def build(work: Path, hidden: int, layers: int, vocab: int, shard_mb: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    base, adapter = work / "base", work / "adapter"
    if (adapter / "adapter_config.json").exists():
        return
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=int(hidden * 2.75) // 64 * 64,
                         num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 256,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(base, max_shard_size=f"{shard_mb}MB")
    lora = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    lora.save_pretrained(adapter)


def child(side: str, work: Path, out: Path) -> dict:
    import torch  # noqa: F401 - imported before the peak is reset, as the libraries are on both sides

    if side == "factinject":
        from factinject.backends.merge import merge_checkpoint

        reset_peak()
        before = vm("VmRSS")
        t0 = time.perf_counter()
        out.mkdir(parents=True)
        merge_checkpoint(work / "base", work / "adapter", out, dtype="bfloat16", max_shard_bytes=400 * 10**6)
    else:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        reset_peak()
        before = vm("VmRSS")
        t0 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(work / "base", dtype=torch.bfloat16)
        merged = PeftModel.from_pretrained(model, work / "adapter").merge_and_unload()
        merged.save_pretrained(out, max_shard_size="400MB")
    return {"side": side, "seconds": round(time.perf_counter() - t0, 2), "rss_before": before,
            "peak": vm("VmHWM"), "peak_over_start": vm("VmHWM") - before}


def largest_difference(a: Path, b: Path) -> float:
    from factinject.models.checkpoint import Checkpoint

    ours, theirs = Checkpoint(a), Checkpoint(b)
    return max((ours.read(k).float() - theirs.read(k).float()).abs().max().item() for k in ours.keys())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("/tmp/factinject-merge-bench"))
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--shard-mb", type=int, default=128)
    parser.add_argument("--child", choices=["factinject", "peft"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.work, args.out)))
        return
    import shutil

    build(args.work, args.hidden, args.layers, args.vocab, args.shard_mb)
    shards = sorted((args.work / "base").glob("*.safetensors"))
    largest = max(p.stat().st_size for p in shards)
    adapter = (args.work / "adapter" / "adapter_model.safetensors").stat().st_size
    results = {}
    for side in ("factinject", "peft"):
        out = args.work / f"out-{side}"
        shutil.rmtree(out, ignore_errors=True)
        proc = subprocess.run([sys.executable, __file__, "--child", side, "--work", str(args.work), "--out", str(out)],
                              capture_output=True, text=True, check=True)
        results[side] = json.loads(proc.stdout.strip().splitlines()[-1])
    mb = 1e6
    bar = 1.5 * (largest + adapter)
    print(f"model: {sum(p.stat().st_size for p in shards) / mb:.0f} MB in {len(shards)} shards "
          f"(largest {largest / mb:.0f} MB), adapter {adapter / mb:.1f} MB")
    for side, r in results.items():
        print(f"{side:>10}: peak {r['peak_over_start'] / mb:7.0f} MB over the process's {r['rss_before'] / mb:.0f} MB "
              f"at start ({r['peak_over_start'] / (largest + adapter):.2f} x largest shard + adapter), "
              f"{r['seconds']:.1f} s")
    ours = results["factinject"]["peak_over_start"]
    print(f"bar: 1.5 x (largest shard + adapter) = {bar / mb:.0f} MB -> {'met' if ours <= bar else 'MISSED'}; "
          f"PEFT / factinject peak: {results['peft']['peak_over_start'] / max(ours, 1):.1f}x")
    diff = largest_difference(args.work / "out-factinject", args.work / "out-peft")
    print(f"largest weight difference between the two merges: {diff:.3g} (bf16: one merge rounds once, PEFT twice)")


if __name__ == "__main__":
    main()
