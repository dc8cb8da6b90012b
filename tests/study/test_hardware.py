"""A study's throughput is measured on one kind of hardware (hpo.study.hardware): a worker on
other hardware is refused, unless the study allows a mix, where the front is read per
hardware. Two hosts are simulated through the one function that names a host's hardware."""

from __future__ import annotations

import optuna
import pytest
from study_helpers import tiny

from hpo import api
from hpo.browse.results import show_text
from hpo.errors import HpoError
from hpo.record.attrs import HARDWARE
from hpo.store.storage import close_all


def on(monkeypatch: pytest.MonkeyPatch, hardware: str) -> None:
    """Make this process a host of `hardware`."""
    monkeypatch.setattr("hpo.study.hardware.host_hardware", lambda device: hardware)


def test_a_worker_on_other_hardware_is_refused(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    on(monkeypatch, "Test CPU A, 1 core per rank")
    api.run_study(api.compose_config(tiny("same", 1)), sqlite_url)
    study = optuna.load_study(study_name="same", storage=sqlite_url)
    assert study.user_attrs[HARDWARE] == "Test CPU A, 1 core per rank"
    assert study.trials[0].user_attrs[HARDWARE] == "Test CPU A, 1 core per rank"
    on(monkeypatch, "Test GPU B")
    with pytest.raises(HpoError) as refused:
        api.resume_study("same", sqlite_url, n_trials=1)
    message = str(refused.value)
    assert "Test CPU A, 1 core per rank" in message and "Test GPU B" in message
    assert "study.hardware=mixed" in message and "\n" not in message
    close_all()
    assert len(optuna.load_study(study_name="same", storage=sqlite_url).trials) == 1


def test_a_mixed_study_runs_on_both_and_shows_a_front_for_each(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    on(monkeypatch, "Test CPU A, 1 core per rank")
    api.run_study(api.compose_config(tiny("mixed", 1, "study.hardware=mixed")), sqlite_url)
    on(monkeypatch, "Test GPU B")
    api.resume_study("mixed", sqlite_url, n_trials=1)
    study = optuna.load_study(study_name="mixed", storage=sqlite_url)
    assert [t.user_attrs[HARDWARE] for t in study.trials] == ["Test CPU A, 1 core per rank", "Test GPU B"]
    shown = show_text(study)
    assert "Pareto front on Test CPU A, 1 core per rank (1 trials)" in shown
    assert "Pareto front on Test GPU B (1 trials)" in shown
