"""The persistent thread pool the CPU kernels run on: every task runs exactly once, in any split."""

from __future__ import annotations

import pytest

from ktx.core import _kernels


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize("n_tasks", [0, 1, 2, 7, 1000])
def test_every_task_runs_once(threads, n_tasks):
    # each task adds (task + 1) to its own slot: a task run twice or skipped changes the sum
    for _ in range(20):
        assert _kernels.pool_run_sum(threads, n_tasks) == n_tasks * (n_tasks + 1) // 2


def test_wake_all_latency_is_measured():
    seconds = _kernels.pool_wake_seconds(2, 200)
    assert 0 < seconds < 0.1  # a bound only against a hang; the figure goes in the notes
