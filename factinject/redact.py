"""Keep secrets out of everything factinject writes or prints.

Nothing in factinject records the environment, but library messages can quote a URL,
a header or a path that carries a token. Messages, manifests and reports therefore
pass through `redact`, which hides the value of every environment variable whose
name says it is a secret (HF_TOKEN, WANDB_API_KEY, AWS_SECRET_ACCESS_KEY, ...).
"""

from __future__ import annotations

import os
import re

_SECRET_NAME = re.compile(r"(^|_)(TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIALS?|AUTH)($|_)", re.IGNORECASE)
_MIN_LEN = 8  # shorter values ("1", "true") are flags, not secrets, and would redact ordinary words
MASK = "***"


def secret_values(environ: dict | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    values = {v for k, v in env.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_LEN}
    return sorted(values, key=len, reverse=True)  # longest first: one secret may contain another


def redact(text: str) -> str:
    for value in secret_values():
        text = text.replace(value, MASK)
    return text
