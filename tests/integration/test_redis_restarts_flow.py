"""Redis restarted three times (AOF on) while counting tasks flow: issue 4's run, scaled.

600 tasks instead of 2,000 so it fits the suite; `python -m tests.bench.redis_restarts` runs
the full one by hand (same code).
"""

from __future__ import annotations

import pytest

from tests.bench.redis_restarts import run

pytestmark = pytest.mark.timeout(120)


def test_three_restarts_while_tasks_flow_lose_nothing(tmp_path):
    fig = run(tmp_path, tasks=600, procs=2, threads=4, seconds=0.05, restarts=3, down_s=1.0)
    assert len(fig.restarts) == 3
    assert fig.done == 600 and fig.not_done == 0 and fig.pending == 0, fig
    assert fig.never_started == 0 and fig.run_twice_outside_restarts == 0, fig
    assert not fig.workers_died, fig
    assert fig.worker_warnings_max_per_second <= 1, fig
