"""The per-epoch log line says which epoch is kept and why (not a bare "keep epoch 3")."""

from __future__ import annotations

from rich.console import Console

from factinject.engines.records import EpochRecord
from factinject.progress import TrainProgress, explain_choice
from factinject.recipe import StopSpec
from factinject.train.policy import choose_epoch

STOP = StopSpec(patience=4, min_delta=0.1, max_drift=0.1)


def record(epoch: int, correct: int, changed: int = 0, n: int = 43, drift_n: int = 48) -> EpochRecord:
    return EpochRecord(epoch=epoch, loss=1.0 / epoch, dev_recall=correct / n, dev_correct=correct, dev_n=n,
                       drift=changed / drift_n, drift_changed=changed, drift_n=drift_n, seconds=1.0)


def line_for(curve: list[EpochRecord], fixed: int | None = None, max_epochs: int = 5) -> str:
    console = Console(record=True, width=400)
    decision = choose_epoch(curve, STOP, fixed, max_epochs)
    TrainProgress(max_epochs, console).epoch_done(curve[-1], decision, curve, STOP)
    return console.export_text().strip()


def test_a_dip_within_min_delta_keeps_the_later_epoch_and_says_why():
    line = line_for([record(1, 20), record(2, 30), record(3, 37), record(4, 34)])
    assert line.startswith("epoch 4: loss 0.2500  dev recall 34/43  drift 0/48  -> keeping epoch 4:"), line
    assert "within stop.min_delta 0.1 of the best (37/43, epoch 3)" in line and "later epoch is kept" in line


def test_a_new_best_and_a_fall_below_the_best():
    assert "keeping epoch 2: the best dev recall so far (30/43)" in line_for([record(1, 20), record(2, 30)])
    line = line_for([record(1, 20), record(2, 40), record(3, 30)])
    assert "keeping epoch 2: the best dev recall so far (40/43)" in line
    assert "epoch 3 is not kept: its dev recall 30/43 is more than stop.min_delta 0.1 below the best" in line


def test_drift_and_stopping_are_named():
    line = line_for([record(1, 20), record(2, 30, changed=20)])
    assert "keeping epoch 1" in line and "epoch 2 is not kept: its drift 20/48 is more than" in line
    assert "stopping: drift" in line, line
    assert "every epoch so far drifted more than stop.max_drift" in line_for([record(1, 20, changed=9)])
    assert "stopping: reached max_epochs 2" in line_for([record(1, 20), record(2, 30)], max_epochs=2)


def tokens_record(epoch: int, correct: int, kept_share: float, prompts: int = 48) -> EpochRecord:
    tokens = prompts * 200
    changed = round((1 - kept_share) * tokens)
    return EpochRecord(epoch=epoch, loss=1.0, dev_recall=correct / 43, dev_correct=correct, dev_n=43,
                       drift=changed / tokens, drift_changed=changed, drift_n=tokens, seconds=1.0,
                       drift_unit="tokens", drift_prompts=prompts)


def test_drift_read_on_tokens_is_bounded_over_prompts_not_tokens():
    """12 % of 9,600 tokens not kept: as 9,600 trials that is surely above 10 %, as 48
    prompts it is not, and the tokens of one answer change together: training goes on."""
    from factinject.train.policy import drift_lower_bound
    from factinject.scoring import wilson_interval

    rec = tokens_record(2, 30, kept_share=0.88)
    assert wilson_interval(rec.drift_changed, rec.drift_n)[0] > 0.1
    assert drift_lower_bound(rec) < 0.1
    decision = choose_epoch([tokens_record(1, 20, 0.95), rec], STOP, None, 5)
    assert not decision.stop and decision.best_epoch == 1, decision  # not kept (above 0.1), not stopped
    assert drift_lower_bound(tokens_record(3, 30, kept_share=0.6)) > 0.1
    line = line_for([tokens_record(1, 20, 0.95), rec])
    assert "drift 1152/9600 tokens (12.0 %)" in line and "epoch 2 is not kept: its drift" in line, line


def test_fixed_epochs():
    curve = [record(1, 20), record(2, 10)]
    assert "keeping epoch 2 (a fixed number of epochs" in explain_choice(curve, choose_epoch(curve, STOP, 3, 3), STOP)


def test_off_a_terminal_long_work_prints_where_it_stands(monkeypatch, capsys):
    """A log (CI, nohup, a notebook) gets a line at a steady interval with the count, the
    rate and the time left, for answers and for training steps, and one at the end."""
    from factinject import progress

    monkeypatch.setattr(progress, "LOG_INTERVAL_SECONDS", 0.0)
    with progress.counter("probe base", 4) as bar:
        for _ in range(4):
            bar.advance()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("probe base: 1/4 (") and "/s, about" in lines[0] and "left)" in lines[0], lines
    assert progress.progress_line("train", 3, 10, 60.0) == "train: 3/10 (20.0 s each, about 2:20 left)"
    assert len(lines) == 4 and lines[-1].startswith("probe base: 4/4 in "), lines  # 3 interval lines, then the end

    console = Console(record=True, width=200)  # not a terminal
    train = TrainProgress(2, console)
    train.start(total_steps=6, done=0)
    for step in range(1, 7):
        train.loss(1.0 / step)
        train.step(step, epoch=(step - 1) / 3)
    with train.phase("epoch 1 dev recall and drift", 3) as bar:
        bar.advance(3)
    train.close()
    text = console.export_text()
    assert "train epoch 1/2 step: 1/6 (" in text and "left), loss 1.0000" in text, text
    assert "train epoch 2/2 step: 5/6" in text and "train: 6/6 steps in" in text, text
    assert "epoch 1 dev recall and drift: 3/3 in" in text, text
