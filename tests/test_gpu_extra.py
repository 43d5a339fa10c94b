"""`pip install ".[gpu]"` resolves for Linux x86-64 on every supported Python, without
installing it (uv resolves against PyPI for that platform), and to the same torch,
transformers, trl, datasets and peft as this CPU environment: the CPU tests exercise
the versions a GPU user gets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version

import pytest
from conftest import REPO

pytestmark = pytest.mark.timeout(300)

SHARED = ("torch", "transformers", "trl", "datasets", "peft")


def resolve_gpu_extra(python: str) -> dict[str, str]:
    cmd = [sys.executable, "-m", "uv", "pip", "compile", str(REPO / "pyproject.toml"), "--extra", "gpu",
           "--python-platform", "x86_64-manylinux_2_28", "--python-version", python, "--no-header"]
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}  # resolve only: no interpreter to fetch
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=280, check=False)
    assert done.returncode == 0, f"the gpu extra does not resolve for Python {python}:\n{done.stderr[-3000:]}"
    return dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", done.stdout, flags=re.MULTILINE))


@pytest.mark.parametrize("python", ["3.11", "3.12", "3.13"])
def test_gpu_extra_resolves_to_the_versions_the_cpu_tests_run(python):
    pins = {name.lower().replace("_", "-"): v for name, v in resolve_gpu_extra(python).items()}
    assert pins.get("vllm") == "0.32.0", pins
    # Unsloth as the Unsloth lane runs it (the `unsloth` extra, which `gpu` includes).
    for requirement in unsloth_extra():
        name, pinned = requirement.split("==")
        assert pins.get(name.lower().replace("_", "-")) == pinned, (requirement, pins)
    for name in SHARED:
        here = version(name).split("+")[0]  # torch 2.13.0+cpu here is 2.13.0 on a GPU
        assert pins[name] == here, f"the gpu extra resolves {name}=={pins[name]}, the CPU tests run {here}"


def unsloth_extra() -> list[str]:
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "factinject[unsloth]" in extras["gpu"], "the gpu extra must take Unsloth from the unsloth extra"
    assert all("==" in r for r in extras["unsloth"]), "the Unsloth lane runs pinned versions"
    return extras["unsloth"]
