"""TensorBoard event files read without TensorFlow: written here by tensorboardX (the writer
MindFormers uses), per rank, read back by metrics.tbevents; a truncated last record (a
writer still running) is ignored, a later file of the same rank wins a step."""

from __future__ import annotations

import pytest

from launcher.metrics.tbevents import losses_by_rank, scalars

SummaryWriter = pytest.importorskip("tensorboardX").SummaryWriter


def _write(log_dir, points, extra=True):
    w = SummaryWriter(log_dir=str(log_dir))
    if extra:
        w.add_text("config", "model: tiny", global_step=1)
    for step, loss in points:
        if extra:
            w.add_scalar("grad-norm", 0.5, global_step=step)
        w.add_scalar("loss", loss, global_step=step)  # the last record of the file
    w.close()


def test_losses_per_rank_from_real_event_files(tmp_path):
    _write(tmp_path / "node" / "output" / "tensorboard" / "rank_0", [(1, 10.5), (2, 7.25), (3, 6.0)])
    _write(tmp_path / "node" / "output" / "tensorboard" / "rank_1", [(1, 10.75), (2, 7.5)])
    got = losses_by_rank(tmp_path)
    assert got == {0: [(1, 10.5), (2, 7.25), (3, 6.0)], 1: [(1, 10.75), (2, 7.5)]}
    (path,) = (tmp_path / "node" / "output" / "tensorboard" / "rank_0").glob("events.out.tfevents.*")
    assert scalars(path, "grad-norm") == [(1, 0.5), (2, 0.5), (3, 0.5)]
    data = path.read_bytes()
    path.write_bytes(data[:-7])  # the last record cut short
    assert scalars(path) == [(1, 10.5), (2, 7.25)]


def test_a_resumed_rank_adds_a_second_file_and_its_steps_win(tmp_path):
    import time
    rank0 = tmp_path / "rank_0"
    _write(rank0, [(1, 9.0), (2, 8.0), (3, 7.9)], extra=False)
    time.sleep(1.1)  # tensorboardX names files by the second
    _write(rank0, [(3, 7.0), (4, 6.0)], extra=False)
    assert losses_by_rank(tmp_path) == {0: [(1, 9.0), (2, 8.0), (3, 7.0), (4, 6.0)]}
