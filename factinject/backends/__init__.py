"""Backends: the only modules that import the heavy libraries (torch, transformers,
peft, trl, unsloth, vllm), each only when the command that needs it runs."""
