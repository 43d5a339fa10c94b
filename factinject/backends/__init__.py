"""Backends: the only modules that import the heavy libraries (torch, transformers,
peft, trl, unsloth, vllm), each only when the command that needs it runs."""


def cuda_with(module: str) -> bool:
    """True when `module` is installed and a CUDA GPU is visible: the question every
    'auto' backend choice asks (unsloth for training, vllm for probing)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return False
    import torch

    return torch.cuda.is_available()
