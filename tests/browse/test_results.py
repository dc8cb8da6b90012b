"""`hpo show`, `hpo studies` and `hpo export` on studies read without loading their trials
whole (hpo.browse.results): the same answers as Optuna's own API gives."""

from __future__ import annotations

import csv
import io
import json

import optuna
import pytest
from optuna.trial import TrialState
from random_trials import random_study
from study_helpers import hpo_ok

from hpo.browse import results
from hpo.browse.results import objective_names, study_results, write_export


def _front_numbers(show: str) -> list[int]:
    """The trial numbers of the front table that `hpo show` prints."""
    lines = show.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("-----")) + 1
    numbers = []
    for line in lines[start:]:
        if not line.strip() or not line.split()[0].isdigit():
            break
        numbers.append(int(line.split()[0]))
    return numbers


def test_show_prints_optunas_front(storage_url: str) -> None:
    """400 random trials, pruned, failed, running and infeasible ones among them."""
    study = random_study(storage_url, 400)
    shown = hpo_ok("show", study.study_name, "--storage", storage_url).stdout
    expected = sorted(study.best_trials, key=lambda t: -t.values[0])
    assert _front_numbers(shown) == [t.number for t in expected]
    assert f"Pareto front ({len(expected)} trials)" in shown
    feasible = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if t.constraints["infeasible"] <= 0]
    best = max(feasible, key=lambda t: t.values[0])
    assert f"best val_accuracy: trial {best.number} " in shown


def test_studies_counts_each_state_of_many_studies(sqlite_url: str) -> None:
    made = [random_study(sqlite_url, 50) for _ in range(3)]
    table = hpo_ok("studies", "--storage", sqlite_url).stdout
    for study in made:
        row = next(line for line in table.splitlines() if line.startswith(study.study_name))
        trials = study.get_trials()
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        assert row.split()[1:3] == [f"{complete}/-", str(running)]


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_an_export_read_page_by_page_is_the_study_read_whole(
    fmt: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = optuna.load_study(study_name=random_study(sqlite_url, 120).study_name, storage=sqlite_url)
    records = [
        {**vars(r), "values": list(r.values.values()) if r.values else None} for r in study_results(study).trials
    ]
    monkeypatch.setattr(results, "EXPORT_PAGE", 7)  # 18 pages, the last one short
    out = io.StringIO()
    write_export(study, fmt, out)
    if fmt == "json":
        assert out.getvalue() == json.dumps(records, indent=2, default=str)
        return
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [int(row["number"]) for row in rows] == [r["number"] for r in records]
    names = objective_names(study)
    for row, record in zip(rows, records, strict=True):
        assert row["state"] == record["state"]
        assert row[names[0]] == ("" if record["values"] is None else str(record["values"][0]))
        assert row["n_layer"] == ("" if "n_layer" not in record["params"] else str(record["params"]["n_layer"]))


def test_an_empty_study_exports_an_empty_list(sqlite_url: str) -> None:
    study = optuna.create_study(storage=sqlite_url, directions=["maximize", "maximize"])
    out = io.StringIO()
    write_export(study, "json", out)
    assert out.getvalue() == "[]"
