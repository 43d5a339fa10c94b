"""Engines: the only modules that import the heavy libraries (torch, transformers,
peft, trl, bitsandbytes, unsloth, vllm). Each runs inside a job's child process
(factinject/engines/process.py): `hf` (train, merge, generate, parity), `unsloth` (train),
`vllm` (generate)."""
