"""Progress bars on stderr: a counter for answers and tensors, and training's bar with
steps, epoch, loss and one line per finished epoch. Rich only: no heavy imports."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)


class Counter:
    """What `counter` yields: `advance(n)` as work is done, `reset()` to start over."""

    def __init__(self, bar: Progress, task):
        self.bar, self.task = bar, task

    def advance(self, n: int = 1) -> None:
        self.bar.advance(self.task, n)

    def reset(self) -> None:
        self.bar.reset(self.task)


class _LineCounter:
    """Off a terminal (CI logs, pipes) a live bar cannot redraw: count, then print one line."""

    def __init__(self):
        self.done = 0

    def advance(self, n: int = 1) -> None:
        self.done += n

    def reset(self) -> None:
        self.done = 0


@contextlib.contextmanager
def counter(title: str, total: int) -> Iterator[Counter]:
    """A transient bar '<title> ━━━ 12/40 0:00:03' on stderr while `total` things are done;
    off a terminal, one line '<title>: 40/40 in 3.1s' when they are."""
    console = Console(stderr=True)
    if not console.is_terminal:
        started, lines = time.perf_counter(), _LineCounter()
        yield lines
        console.print(f"{title}: {lines.done}/{total} in {time.perf_counter() - started:.1f}s", highlight=False)
        return
    with Progress(TextColumn(title), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True,
                  console=console) as bar:
        yield Counter(bar, bar.add_task(title, total=total))


class TrainProgress:
    def __init__(self, max_epochs: int, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.max_epochs = max_epochs
        self.bar = Progress(
            TextColumn("[bold]train[/] epoch {task.fields[epoch]}/{task.fields[max_epochs]}"),
            BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(),
            console=self.console, transient=False,
        )
        self.task = None

    def start(self, total_steps: int, done: int) -> None:
        self.bar.start()
        self.task = self.bar.add_task("train", total=total_steps, completed=done, epoch=1,
                                      max_epochs=self.max_epochs, loss="-")

    def loss(self, value: float) -> None:
        if self.task is not None:
            self.bar.update(self.task, loss=f"{value:.4f}")

    def step(self, global_step: int, epoch: float) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=global_step, epoch=min(int(epoch) + 1, self.max_epochs))

    def epoch_done(self, record, decision, curve=None, stop=None) -> None:
        loss = "-" if record.loss is None else f"{record.loss:.4f}"
        why = explain_choice(curve, decision, stop) if curve and stop else f"keeping epoch {decision.best_epoch}"
        if decision.stop:
            why += f"; stopping: {decision.reason}"
        self.console.print(f"epoch {record.epoch}: loss {loss}  dev recall {record.dev_correct}/{record.dev_n}  "
                           f"drift {record.drift_changed}/{record.drift_n}  -> {why}")

    def close(self) -> None:
        self.bar.stop()


def explain_choice(curve, decision, stop) -> str:
    """Which epoch is kept so far and why, in the terms of train.choose_epoch: e.g.
    'keeping epoch 4: its dev recall 34/43 is within stop.min_delta 0.1 of the best
    (37/43, epoch 3), and of near-ties the later epoch is kept'."""
    best = next((r for r in curve if r.epoch == decision.best_epoch), None)
    if best is None:
        return f"keeping epoch {decision.best_epoch}"
    kept = f"keeping epoch {best.epoch}"
    score = f"{best.dev_correct}/{best.dev_n}"
    if decision.reason.startswith("fixed"):
        return f"{kept} (a fixed number of epochs: the latest is kept)"
    eligible = [r for r in curve if r.drift <= stop.max_drift]
    if not eligible:
        return (f"{kept}: every epoch so far changed more than stop.max_drift {stop.max_drift} of the control answers; "
                f"this one changed the fewest ({best.drift_changed}/{best.drift_n})")
    top = max(eligible, key=lambda r: (r.dev_recall, -r.epoch))
    last = curve[-1]
    if best is top:
        why = f"{kept}: the best dev recall so far ({score})"
    else:
        why = (f"{kept}: its dev recall {score} is within stop.min_delta {stop.min_delta} of the best "
               f"({top.dev_correct}/{top.dev_n}, epoch {top.epoch}), and of near-ties the later epoch is kept")
    if last is not best:
        if last.drift > stop.max_drift:
            why += (f"; epoch {last.epoch} is not kept: it changed {last.drift_changed}/{last.drift_n} control answers, "
                    f"more than stop.max_drift {stop.max_drift}")
        else:
            why += (f"; epoch {last.epoch} is not kept: its dev recall {last.dev_correct}/{last.dev_n} is more than "
                    f"stop.min_delta {stop.min_delta} below the best")
    return why
