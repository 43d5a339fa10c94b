"""Probe generators: one interface, two engines.

`HFGenerator` (transformers, batched, left padding, greedy, stops at eos) runs
anywhere; `VLLMGenerator` (offline `LLM`, greedy) runs on a GPU. Both render prompts
with the model's own tokenizer and chat template, so the probe asks exactly the way
training formatted questions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from factinject.backends.hf_generate import MAX_NEW_TOKENS
from factinject.errors import FactinjectError


@dataclass(frozen=True)
class ModelUnderTest:
    """What to load: a base model, optionally with a LoRA adapter on top."""

    label: str  # "base", "adapter", "merged"
    path: str
    adapter: str | None = None
    local: bool = True


class HFGenerator:
    def __init__(self, target: ModelUnderTest, *, dtype: str = "float32", allow_pickle: bool = False,
                 trust_remote_code: bool = False, batch_size: int | None = None):
        import torch

        from factinject.models import ModelRef, load_model_cpu

        ref = ModelRef(target.label, target.path, target.local)
        self.model, self.tokenizer = load_model_cpu(ref, dtype=dtype, allow_pickle=allow_pickle,
                                                    trust_remote_code=trust_remote_code)
        if target.adapter:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, target.adapter)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        # Auto batch size: large on a GPU (halved on out-of-memory), moderate on a CPU
        # where bigger batches stop paying once both cores are busy.
        self.batch_size = batch_size or (256 if self.device == "cuda" else 64)

    def answer(self, questions: list[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
        import torch

        from factinject.backends.hf_generate import generate_answers

        prompts = [[{"role": "user", "content": q}] for q in questions]
        while True:
            try:
                return generate_answers(self.model, self.tokenizer, prompts, batch_size=self.batch_size,
                                        max_new_tokens=max_new_tokens)
            except torch.cuda.OutOfMemoryError:
                if self.batch_size == 1:
                    raise FactinjectError("out of GPU memory even at batch size 1",
                                          fix="probe on a larger GPU, or with --backend vllm and a 4-bit model") from None
                self.batch_size //= 2
                torch.cuda.empty_cache()

    def close(self) -> None:
        del self.model


class VLLMGenerator:
    def __init__(self, target: ModelUnderTest, *, lora_rank: int = 16, trust_remote_code: bool = False,
                 gpu_memory_utilization: float = 0.85):
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest

        from factinject.models import ModelRef, load_tokenizer

        self.tokenizer = load_tokenizer(ModelRef(target.label, target.adapter or target.path, target.local),
                                        trust_remote_code=trust_remote_code)
        self.llm = LLM(model=target.path, enable_lora=bool(target.adapter), max_lora_rank=max(lora_rank, 8),
                       seed=0, trust_remote_code=trust_remote_code, gpu_memory_utilization=gpu_memory_utilization)
        self.lora = LoRARequest("factinject", 1, str(Path(target.adapter).resolve())) if target.adapter else None
        self.SamplingParams = SamplingParams

    def answer(self, questions: list[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
        # Token ids rendered by the same HF tokenizer and template as in training: vLLM
        # adds nothing (no second BOS, no template of its own).
        prompts = [{"prompt_token_ids": self.tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True, return_dict=False)}
            for q in questions]
        params = self.SamplingParams(temperature=0.0, max_tokens=max_new_tokens,
                                     stop_token_ids=[self.tokenizer.eos_token_id], skip_special_tokens=True)
        outputs = self.llm.generate(prompts, params, lora_request=self.lora, use_tqdm=False)
        return [o.outputs[0].text.strip() for o in outputs]

    def close(self) -> None:
        import gc

        del self.llm
        gc.collect()


def pick_generator(name: str) -> str:
    """'auto' -> 'vllm' when vLLM imports and a GPU is present, else 'hf'."""
    from factinject.backends import cuda_with

    if name != "auto":
        return name
    return "vllm" if cuda_with("vllm") else "hf"


def make_generator(backend: str, target: ModelUnderTest, **kwargs):
    if backend == "vllm":
        return VLLMGenerator(target, lora_rank=kwargs.get("lora_rank", 16),
                             trust_remote_code=kwargs.get("trust_remote_code", False))
    kwargs.pop("lora_rank", None)
    return HFGenerator(target, **kwargs)
