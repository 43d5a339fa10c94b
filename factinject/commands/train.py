"""`factinject train`: LoRA adapter for a run, epochs chosen on the dev split."""

from __future__ import annotations

from pathlib import Path

import click

from factinject.commands.common import answer_cache_option, training_backend_option
from factinject.errors import FactinjectError


def parse_epochs(value: str | None):
    if value is None or value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        raise FactinjectError(f"--epochs {value!r} is neither a number nor 'auto'", fix="pass --epochs 3 or --epochs auto") from None
    if n < 1:
        raise FactinjectError("--epochs must be at least 1", fix="pass --epochs 3 or --epochs auto")
    return n


def interrupted_training(run, template_flag: str):
    """What to say after Ctrl-C: resume when an epoch was checkpointed, else start again."""
    def message() -> tuple[str, str]:
        if any((run.path / "train" / "checkpoints").glob("checkpoint-*/trainer_state.json")):
            fix = (f"resume with `factinject train --resume{template_flag}` (same recipe and flags), or start over "
                   f"with `factinject train --fresh{template_flag}`")
            return "interrupted (Ctrl-C); finished epochs are checkpointed, no adapter was published", fix
        return ("interrupted (Ctrl-C) before the first epoch finished; no adapter was published",
                f"run `factinject train{template_flag}` again")
    return message


@click.command()
@click.option("--run", "run_path", type=click.Path(path_type=Path), help="Run directory (default: the last expanded run).")
@click.option("--recipe", "recipe_path", type=click.Path(path_type=Path),
              help="Recipe YAML, or a shipped recipe's name (default: testbed-cpu).")
@click.option("--epochs", help="A number, or 'auto' to choose the epoch on the dev split (default: the recipe's).")
@click.option("--lr", type=float, help="Override train.learning_rate.")
@click.option("--rank", type=int, help="Override lora.r.")
@training_backend_option
@answer_cache_option
@click.option("--resume", is_flag=True, help="Continue an interrupted training from its last epoch checkpoint.")
@click.option("--fresh", is_flag=True, help="Discard an interrupted training and start over.")
@click.option("--force", is_flag=True,
              help="Replace the run's trained adapter (its export and report are then stale until redone).")
@click.option("--allow-pickle", is_flag=True, help="Allow loading .bin (pickle) weights. Only for models you trust.")
@click.option("--trust-remote-code", is_flag=True, help="Allow a model's own Python code. Only for models you trust.")
@click.option("--chat-template", "chat_template", metavar="default|FILE",
              help="For a base model without a chat template: 'default' (see docs/troubleshooting.md) or a Jinja "
                   "file. Recorded in the run; later commands reuse it.")
def train(run_path, recipe_path, epochs, lr, rank, backend, no_answer_cache, resume, fresh, force, allow_pickle,
          trust_remote_code, chat_template) -> None:
    """Train a LoRA adapter on the run's train split (with replay of base answers).

    With --epochs auto (the default) each epoch is scored on the dev split and on
    drift-control prompts; training stops when dev recall stops improving or answers
    drift too far, and the best epoch's adapter is kept in <run>/adapter.
    """
    from factinject.engines.choice import check_device
    from factinject.models.base import run_template
    from factinject.recipe import load_recipe
    from factinject.rundir.files import resolve_run
    from factinject.rundir.guard import OOM_TRAIN_FIX, guarded
    from factinject.train.stage import run_training

    if resume and fresh:
        raise FactinjectError("--resume and --fresh contradict each other", fix="pass one of them")
    run = resolve_run(str(run_path) if run_path else None)
    recipe = load_recipe(recipe_path)
    recipe = recipe.with_overrides(**{"train.epochs": parse_epochs(epochs), "train.learning_rate": lr, "lora.r": rank,
                                      "model.backend": backend})
    check_device(recipe, str(recipe_path) if recipe_path else None)
    flag = (" --force" if force else "") + (f" --chat-template {chat_template}" if chat_template else "")
    with guarded(run, "train", interrupted_training(run, flag), oom_fix=OOM_TRAIN_FIX), \
            run_template(run, chat_template) as template:
        result = run_training(run, recipe, resume=resume, fresh=fresh, force=force, allow_pickle=allow_pickle,
                              trust_remote_code=trust_remote_code, chat_template=template,
                              answer_cache=not no_answer_cache)
        stale = run.record().stale_outputs()
    best = next(r for r in result.curve if r.epoch == result.best_epoch)
    click.echo(f"kept epoch {result.best_epoch} of {len(result.curve)} ({result.reason}); dev recall "
               f"{best.dev_correct}/{best.dev_n}, drift {best.drift_changed}/{best.drift_n}; "
               f"adapter in {run.path / 'adapter'} ({result.seconds:.1f}s, {result.backend} backend)")
    if stale:
        click.secho(f"warning: {' and '.join(stale)}: made from the previous adapter, now stale; `factinject probe` "
                    f"refuses a stale merge: run `factinject export --run {run.path} --merged --force`, then "
                    f"`factinject probe --run {run.path}`", fg="yellow", err=True)
