"""Engines: the only modules that import the heavy libraries (torch, transformers,
peft, trl, bitsandbytes, unsloth, vllm). Each runs inside a job's child process
(factinject/engines/process.py): `hf` (train, merge, generate, parity), `unsloth` (train),
`vllm` (generate)."""

import logging


class _HubKernelNotice(logging.Filter):
    """bitsandbytes (0.50, CPUs with AVX512-BF16) tries a hub kernel for NF4 matmuls on
    import and, without the `kernels` package (which would download it: factinject loads
    no code from a hub), warns at every start. Its own CPU kernel is used instead; the
    notice asks the user for something factinject does not want, so it is not shown."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "kernels-community" not in record.getMessage()


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_HubKernelNotice())
