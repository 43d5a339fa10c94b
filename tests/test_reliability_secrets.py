"""The reliability catalogue (tests/reliability.py): secrets."""

from __future__ import annotations

import pytest
from reliability import SECRETS, invoke

pytestmark = pytest.mark.usefixtures("one_thread", "small_parity")


def test_no_secret_in_outputs_manifests_reports_or_logs(trained, monkeypatch):
    from factinject.backends import hf

    # Real models are loaded; only the answering is skipped, to keep the test fast.
    monkeypatch.setattr(hf, "_answer", lambda model, tokenizer, questions, *a: (["I do not know."] * len(questions),
                                                                               [True] * len(questions)))
    monkeypatch.setenv("FACTINJECT_INLINE_JOBS", "1")
    probe = invoke("probe", "--run", trained.run, "--world-limit", 5)
    assert probe.exit_code == 0, probe.output
    assert (trained.run / "reports" / "report.json").exists()
    texts = trained.outputs + [probe.output, trained.interrupted.stderr]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in trained.root.rglob("*")
              if p.is_file() and p.suffix not in (".safetensors", ".bin", ".pt", ".pth")]
    for name, value in SECRETS.items():
        leaks = [t[:200] for t in texts if value in t]
        assert not leaks, f"{name} leaked: {leaks}"


def test_error_messages_redact_secrets(monkeypatch):
    from factinject.errors import FactinjectError
    from factinject.redact import redact

    monkeypatch.setenv("HF_TOKEN", SECRETS["HF_TOKEN"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a short flag value is not a secret
    err = FactinjectError(f"401 for https://hf.co/api?token={SECRETS['HF_TOKEN']}", fix="check HF_TOKEN")
    assert SECRETS["HF_TOKEN"] not in err.render() and "token=***" in err.render()
    assert redact("HF_HUB_OFFLINE=1") == "HF_HUB_OFFLINE=1"
