"""The kill drill in CI (small): ~20 random kills of submit / submit --follow / run / logs -f /
fetch against the real SSH test cluster, then the invariants (tests/killdrill.py). The full
drill (60+ kills) is run by hand: ``python -m tests.killdrill --kills 60``."""

from __future__ import annotations

import os

import pytest

from tests.killdrill import Drill

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
KILLS = int(os.environ.get("ALAUNCH_KILL_DRILL", "20"))


@pytest.mark.timeout(1200)
def test_kill_drill_leaves_no_stuck_record_no_orphan_no_claim_no_corrupt_file(ssh_cluster, tmp_path):
    drill = Drill(ssh_cluster, tmp_path / "drill", seed=int(os.environ.get("ALAUNCH_KILL_DRILL_SEED", "7")))
    report = drill.run(KILLS)
    print(report.summary())
    assert not report.violations, (report.summary(), report.violations[:10])
    assert sum(report.kills.values()) >= KILLS and report.jobs  # it killed for real, and jobs were made
