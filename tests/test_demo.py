"""``make demo`` runs ``python -m nbpool.demo``: it must work and show what the README says."""

import re
import subprocess
import sys


def test_the_demo_shows_a_progress_bar_results_and_insights():
    result = subprocess.run([sys.executable, "-m", "nbpool.demo"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "squares: 100%" in result.stderr and "1000/1000" in result.stderr
    total = re.search(r"sum of squares: (\d+)\s+\(expected (\d+)\)", result.stdout)
    assert total and total.group(1) == total.group(2)
    per_worker = re.search(r"tasks per worker \(from worker_exit\): \[([\d, ]+)\]", result.stdout)
    assert per_worker and sum(map(int, per_worker.group(1).split(","))) == 1000
    assert "Total number of tasks completed: 1000" in result.stdout
    assert "Top 5 longest tasks:" in result.stdout
