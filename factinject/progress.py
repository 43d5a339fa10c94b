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


# Off a terminal, a long stage prints where it stands this often (a CI log, nohup, a
# notebook's output would otherwise show nothing for the minutes a real model takes).
LOG_INTERVAL_SECONDS = 30.0


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def progress_line(title: str, done: int, total: int, elapsed: float, unit: str = "") -> str:
    """'<title>: 120/406 (3.2/s, about 1:29 left)', or '(12.5 s each, ...)' below one a second."""
    rate = done / elapsed if elapsed > 0 else 0.0
    left = f", about {_duration((total - done) / rate)} left" if rate > 0 and total > done else ""
    speed = f"{rate:.1f}/s" if rate >= 1 or rate == 0 else f"{1 / rate:.1f} s each"
    return f"{title}: {done}/{total}{unit} ({speed}{left})"


class _LineCounter:
    """Off a terminal (CI logs, pipes) a live bar cannot redraw: a line every
    LOG_INTERVAL_SECONDS while work goes on, and one when it is done."""

    def __init__(self, title: str, total: int, console: Console):
        self.title, self.total, self.console = title, total, console
        self.done = 0
        self.started = self.last = time.perf_counter()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= LOG_INTERVAL_SECONDS and self.done < self.total:
            self.last = now
            self.console.print(progress_line(self.title, self.done, self.total, now - self.started), highlight=False)

    def reset(self) -> None:
        self.done = 0
        self.started = self.last = time.perf_counter()


@contextlib.contextmanager
def counter(title: str, total: int, console: Console | None = None) -> Iterator[Counter]:
    """A transient bar '<title> ━━━ 12/40 0:00:03' on stderr while `total` things are done;
    off a terminal, a line every LOG_INTERVAL_SECONDS and '<title>: 40/40 in 3.1s' when they are."""
    console = console or Console(stderr=True)
    if not console.is_terminal:
        lines = _LineCounter(title, total, console)
        yield lines
        console.print(f"{title}: {lines.done}/{total} in {time.perf_counter() - lines.started:.1f}s", highlight=False)
        return
    with Progress(TextColumn(title), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True,
                  console=console) as bar:
        yield Counter(bar, bar.add_task(title, total=total))


class TrainProgress:
    """Training's bar (steps, epoch, loss); off a terminal, a line every
    LOG_INTERVAL_SECONDS with the step, steps per second and the time left."""

    def __init__(self, max_epochs: int, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.max_epochs = max_epochs
        self.live = self.console.is_terminal
        self.bar = Progress(
            TextColumn("{task.fields[label]}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            console=self.console, transient=False,
        )
        self.task = None
        self.total = self.first = 0
        self.epoch, self.last_loss = 1, "-"
        self.started = self.last_line = time.perf_counter()

    def start(self, total_steps: int, done: int) -> None:
        self.total, self.first = total_steps, done
        self.started = self.last_line = time.perf_counter()
        if self.live:
            self.bar.start()
        self.task = self.bar.add_task("train", total=total_steps, completed=done, label=self._label(), note="loss -")

    def loss(self, value: float) -> None:
        self.last_loss = f"{value:.4f}"
        if self.task is not None:
            self.bar.update(self.task, note=f"loss {self.last_loss}")

    def step(self, global_step: int, epoch: float) -> None:
        self.epoch = min(int(epoch) + 1, self.max_epochs)
        if self.task is not None:
            self.bar.update(self.task, completed=global_step, label=self._label())
        now = time.perf_counter()
        if not self.live and now - self.last_line >= LOG_INTERVAL_SECONDS and global_step < self.total:
            self.last_line = now
            line = progress_line(f"train epoch {self.epoch}/{self.max_epochs} step", global_step - self.first,
                                 self.total - self.first, now - self.started)
            self.console.print(f"{line}, loss {self.last_loss}", highlight=False)

    def _label(self) -> str:
        return f"[bold]train[/] epoch {self.epoch}/{self.max_epochs}"

    @contextlib.contextmanager
    def phase(self, title: str, total: int) -> Iterator[Counter]:
        """Work inside training (the base model's answers, each epoch's evaluation): a line
        of the training bar on a terminal, interval lines off one."""
        if not self.live or self.task is None:
            with counter(title, total, self.console) as bar:
                yield bar
            return
        task = self.bar.add_task(title, total=total, label=title, note="")
        try:
            yield Counter(self.bar, task)
        finally:
            self.bar.remove_task(task)

    def epoch_done(self, record, decision, curve=None, stop=None) -> None:
        loss = "-" if record.loss is None else f"{record.loss:.4f}"
        why = explain_choice(curve, decision, stop) if curve and stop else f"keeping epoch {decision.best_epoch}"
        if decision.stop:
            why += f"; stopping: {decision.reason}"
        self.console.print(f"epoch {record.epoch}: loss {loss}  dev recall {record.dev_correct}/{record.dev_n}  "
                           f"drift {record.drift_text()}  -> {why}")

    def close(self) -> None:
        if self.live:
            self.bar.stop()
        elif self.task is not None:
            done = int(self.bar.tasks[0].completed) if self.bar.tasks else self.total
            self.console.print(f"train: {done - self.first}/{self.total - self.first} steps in "
                               f"{_duration(time.perf_counter() - self.started)}", highlight=False)


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
        return (f"{kept}: every epoch so far drifted more than stop.max_drift {stop.max_drift}; "
                f"this one drifted the least ({best.drift_text()})")
    top = max(eligible, key=lambda r: (r.dev_recall, -r.epoch))
    last = curve[-1]
    if best is top:
        why = f"{kept}: the best dev recall so far ({score})"
    else:
        why = (f"{kept}: its dev recall {score} is within stop.min_delta {stop.min_delta} of the best "
               f"({top.dev_correct}/{top.dev_n}, epoch {top.epoch}), and of near-ties the later epoch is kept")
    if last is not best:
        if last.drift > stop.max_drift:
            why += (f"; epoch {last.epoch} is not kept: its drift {last.drift_text()} is more than "
                    f"stop.max_drift {stop.max_drift}")
        else:
            why += (f"; epoch {last.epoch} is not kept: its dev recall {last.dev_correct}/{last.dev_n} is more than "
                    f"stop.min_delta {stop.min_delta} below the best")
    return why
