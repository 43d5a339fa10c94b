"""How much memory a vLLM engine needs for a probe, and the settings that make it fit.

vLLM takes `gpu_memory_utilization` of the card and fills it, in this order, with
the weights, the LoRA slots, a working reserve (activations of its profiling batch,
the sampler's logits, CUDA graphs and the CUDA context) and, with whatever is left,
the KV cache. The KV cache must hold at least one whole sequence of `max_model_len`
tokens, and `max_model_len` defaults to the model's own context (128k for
Llama-3.1): 16 GiB of KV cache for one sequence, more than a 24 GB card has left
after 15 GiB of bf16 weights. A probe needs far less: its longest prompt plus
`max_new_tokens`. docs/recipes.md works the numbers through for Llama-3.1-8B.

Pure arithmetic on a model's config.json; no heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass

GiB = 1 << 30
BLOCK = 16  # vLLM's KV-cache block: max_model_len is rounded up to whole blocks
MAX_NUM_SEQS = 256  # vLLM's default batch; more sequences than the KV cache holds would be preempted
BATCHED_TOKENS = 8192  # tokens vLLM's profiling forward pass runs at once (its default for the offline engine)
FIXED_RESERVE = 1 * GiB  # CUDA context, CUDA graphs and allocator slack (an estimate, not a measurement)
# bits per weight of each storage format; NF4 with double quantization stores a
# 4-bit code per weight, an 8-bit scale per 64 weights and a 32-bit scale per 256 scales
BITS = {"float32": 32, "bfloat16": 16, "float16": 16, "nf4": 4 + 8 / 64 + 32 / (64 * 256)}
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# 24 GB cards (RTX 3090/4090, A10G...) report about 23.6-24 GiB in all; the plan uses the lower figure.
CARD_24GB = int(23.5 * GiB)


@dataclass(frozen=True)
class ModelShape:
    """The sizes that decide a decoder's memory, read off its config.json."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool  # lm_head shares the embedding matrix
    max_positions: int | None = None

    @classmethod
    def from_config(cls, config: dict) -> ModelShape:
        config = config.get("text_config") or config  # multimodal configs nest the language model's
        heads = config["num_attention_heads"]
        return cls(layers=config["num_hidden_layers"], hidden=config["hidden_size"],
                   intermediate=config["intermediate_size"], heads=heads,
                   kv_heads=config.get("num_key_value_heads") or heads,
                   head_dim=config.get("head_dim") or config["hidden_size"] // heads, vocab=config["vocab_size"],
                   tied=bool(config.get("tie_word_embeddings", False)),
                   max_positions=config.get("max_position_embeddings"))

    def module_dims(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear projection of one block."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {"q_proj": (self.hidden, q), "k_proj": (self.hidden, kv), "v_proj": (self.hidden, kv),
                "o_proj": (q, self.hidden), "gate_proj": (self.hidden, self.intermediate),
                "up_proj": (self.hidden, self.intermediate), "down_proj": (self.intermediate, self.hidden)}

    @property
    def linear_params(self) -> int:
        """Parameters of the blocks' linear projections (what 4-bit quantization packs)."""
        return self.layers * sum(i * o for i, o in self.module_dims().values())

    @property
    def other_params(self) -> int:
        """Embeddings, lm_head and norms: kept in 16-bit even in a 4-bit checkpoint."""
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return embeddings + (2 * self.layers + 1) * self.hidden

    @property
    def params(self) -> int:
        return self.linear_params + self.other_params

    def weight_bytes(self, weights: str) -> int:
        """Bytes of the weights stored as `weights` (float32, bfloat16, float16 or nf4)."""
        if weights == "nf4":
            return int(self.linear_params * BITS["nf4"] / 8) + self.other_params * 2
        return self.params * BITS[weights] // 8

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """One token's keys and values in every layer."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    def lora_bytes(self, rank: int, modules: tuple[str, ...] = LORA_MODULES, dtype_bytes: int = 2) -> int:
        """One LoRA slot of `rank` on `modules`: A (rank x in) and B (out x rank) per layer."""
        dims = self.module_dims()
        return self.layers * sum(rank * (dims[m][0] + dims[m][1]) for m in modules if m in dims) * dtype_bytes

    def activation_bytes(self, tokens: int = BATCHED_TOKENS, seqs: int = MAX_NUM_SEQS, dtype_bytes: int = 2) -> int:
        """Peak of vLLM's profiling forward pass: the block's widest activations for `tokens`
        tokens, plus float32 logits for `seqs` sequences."""
        widest = 4 * self.hidden + 3 * self.intermediate  # residual, normed, attention out + gate, up, product
        return tokens * widest * dtype_bytes + seqs * self.vocab * 4


def max_model_len(prompt_lengths: list[int], max_new_tokens: int, limit: int | None = None) -> int:
    """Room for the longest prompt and its answer, in whole KV blocks, never past the model's own limit."""
    longest = max(prompt_lengths, default=1)
    need = -(-(longest + max_new_tokens) // BLOCK) * BLOCK
    return min(need, limit) if limit else need


@dataclass(frozen=True)
class EnginePlan:
    """What one engine needs and what the card gives it, in bytes."""

    weights: int
    lora: int
    reserve: int
    kv_per_token: int
    max_model_len: int
    budget: int  # gpu_memory_utilization x the card's memory

    @property
    def kv_cache(self) -> int:
        return self.budget - self.weights - self.lora - self.reserve

    @property
    def kv_per_sequence(self) -> int:
        return self.max_model_len * self.kv_per_token

    @property
    def max_num_seqs(self) -> int:
        """Sequences whose whole KV cache fits at once (vLLM's default batch at most)."""
        return max(0, min(MAX_NUM_SEQS, self.kv_cache // self.kv_per_sequence)) if self.kv_cache > 0 else 0

    @property
    def fits(self) -> bool:
        return self.max_num_seqs >= 1

    def explain(self) -> str:
        def gib(b: int) -> str:
            return f"{b / GiB:.2f} GiB"

        return (f"budget {gib(self.budget)} = weights {gib(self.weights)} + LoRA {gib(self.lora)} + reserve "
                f"{gib(self.reserve)} + KV cache {gib(self.kv_cache)}; one sequence of {self.max_model_len} tokens "
                f"needs {gib(self.kv_per_sequence)} of KV cache ({self.kv_per_token // 1024} KiB a token), so "
                f"{self.max_num_seqs} sequences fit at once")


def plan_engine(shape: ModelShape, *, weights: str, max_model_len: int, device_bytes: int, utilization: float,
                lora_rank: int | None = None, kv_dtype_bytes: int = 2) -> EnginePlan:
    """The memory plan of one vLLM engine: weights in `weights` format, a LoRA slot of
    `lora_rank` if any, KV cache in `kv_dtype_bytes`, on a device of `device_bytes`."""
    lora = shape.lora_bytes(lora_rank) if lora_rank else 0
    reserve = FIXED_RESERVE + shape.activation_bytes()
    return EnginePlan(weights=shape.weight_bytes(weights), lora=lora, reserve=reserve,
                      kv_per_token=shape.kv_bytes_per_token(kv_dtype_bytes), max_model_len=max_model_len,
                      budget=int(device_bytes * utilization))


# LoRA ranks vLLM accepts for max_lora_rank
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def lora_rank_slot(rank: int) -> int | None:
    """The smallest max_lora_rank vLLM accepts that holds `rank` (None: larger than any)."""
    return next((r for r in VLLM_LORA_RANKS if r >= rank), None)
