"""`--timeout S` of `hpo run`, `resume` and `worker`: no trial starts after S seconds, the
one running finishes, and the study stays resumable with nothing left RUNNING."""

from __future__ import annotations

from optuna.trial import TrialState
from study_helpers import hpo_ok, states, tiny

TARGET = 40  # far more tiny trials than 2 s allow


def test_timeout_stops_starting_trials_in_run_resume_and_worker(sqlite_url: str) -> None:
    hpo_ok("run", *tiny("timed", TARGET), "--timeout", "2", "--storage", sqlite_url, "--quiet")
    after_run = states(sqlite_url, "timed")
    assert 1 <= len(after_run) < TARGET
    assert set(after_run.values()) == {TrialState.COMPLETE.name}  # the last one started ran to its end

    hpo_ok("resume", "timed", "--timeout", "2", "--storage", sqlite_url, "--quiet")
    after_resume = states(sqlite_url, "timed")
    assert len(after_run) < len(after_resume) < TARGET

    hpo_ok("worker", "timed", "--timeout", "2", "--storage", sqlite_url, "--quiet")
    after_worker = states(sqlite_url, "timed")
    assert len(after_resume) < len(after_worker) < TARGET
    assert set(after_worker.values()) == {TrialState.COMPLETE.name}
