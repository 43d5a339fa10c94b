"""A rich progress bar for training: steps, epoch, loss, and one line per finished epoch."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


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

    def epoch_done(self, record, decision) -> None:
        self.console.print(
            f"epoch {record.epoch}: loss {record.loss if record.loss is None else round(record.loss, 4)}  "
            f"dev recall {record.dev_correct}/{record.dev_n}  drift {record.drift_changed}/{record.drift_n}  "
            f"-> keep epoch {decision.best_epoch}{' (stop: ' + decision.reason + ')' if decision.stop else ''}"
        )

    def close(self) -> None:
        self.bar.stop()
