"""What the CLI draws for many streams: a 64-node job's summary and start line stay readable."""

from __future__ import annotations

import io

from rich.console import Console

from launcher.cli.logview import streams_table, summary_table
from launcher.metrics.logparse import LogState
from launcher.ops import registry as reg

LOSS = ("2026-01-01 10:00:0{s},000 - mindformers[mindformers/core/callback/callback.py:500] - INFO - "
        "{{ Epoch:[  1/  1], step:[{step:5d}/    2], loss: {loss:.6f}, per_step_time: 250ms, lr: 0.0001, "
        "overflow cond: False, loss_scale: 1.0, global_norm: [0.0248], train_throughput_per_npu: 0.001T")


def _stream(rank: int, fail: bool = False):
    lines = [LOSS.format(s=1, step=1, loss=2.0 + rank / 100)]
    if fail:
        lines += ["Traceback (most recent call last):", '  File "train.py", line 3, in <module>',
                  "ValueError: bad batch size"]
    else:
        lines += [LOSS.format(s=2, step=2, loss=1.0 + rank / 100), "......Training Over!"]
    return LogState(host=f"10.0.0.{rank}", rank=rank).feed_lines(lines).summary()


def _text(table, width: int = 80) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(table)
    return out.getvalue()


def test_a_few_streams_keep_one_column_each():
    text = _text(summary_table([_stream(0), _stream(1)]))
    assert "10.0.0.0/0" in text and "10.0.0.1/0" not in text and "10.0.0.1/1" in text
    assert "loss first/last/min" in text


def test_64_streams_are_rows_the_failed_one_listed_the_ok_ones_counted():
    summaries = [_stream(r, fail=(r == 37)) for r in range(64)]
    text = _text(summary_table(summaries))
    assert "Log summary: 64 streams, 1 FAILED, 63 ok" in text
    assert "10.0.0.37/37" in text and "FAILED" in text  # the failed rank is always listed
    assert "... 48 more" in text and "48 ok" in text  # 16 rows: the failed one and the first 15 others
    assert "10.0.0.0/0" in text and "10.0.0.63/63" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert sum("2/2 steps" in line for line in text.splitlines()) == 15
    everything = _text(streams_table(summaries, listed=64), width=120)
    assert "more" not in everything and "10.0.0.63/63" in everything


def test_the_start_line_of_a_64_node_job_names_8_and_counts_the_rest():
    from launcher.ops.service import JobService
    started_line = JobService(None, ".").started_line
    nodes = tuple(reg.NodeRecord(i, f"h{i}", "/w", pid=100 + i) for i in range(64))
    record = reg.JobRecord("j-1", "big", "finetune", "running", "", "", "", "", "", None, None, None,
                           meta={"devices": {"h0": [0]}}, nodes=nodes)
    line = started_line(record)
    assert line.startswith("started j-1 on 64 node(s): h0 (node 0, pid 100, devices 0), h1 (node 1, pid 101, devices -)")
    assert "h7 (node 7" in line and "h8 (" not in line and line.endswith(", and 56 more (alaunch status j-1)")
    one = reg.JobRecord("j-2", "one", "finetune", "running", "", "", "", "", "", None, None, None, nodes=nodes[:1])
    assert started_line(one) == "started j-2 on 1 node(s): h0 (node 0, pid 100, devices -)"


def test_a_gang_stopped_job_counts_its_incomplete_streams():
    stopped = LogState(host="10.0.0.9", rank=9).feed_lines([LOSS.format(s=1, step=1, loss=2.0)]).summary()
    assert stopped.status == "incomplete"
    text = _text(streams_table([_stream(0, fail=True)] + [stopped] * 40))
    assert "41 streams, 1 FAILED, 40 incomplete" in text
    assert "... 25 more" in text and "25 incomplete" in text and "no end marker" not in text
