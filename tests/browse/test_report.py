"""`hpo report NAME --out DIR`: a static HTML page and real PNG images of a study."""

from __future__ import annotations

import html
import re
from pathlib import Path

import optuna
import pytest
from browse_helpers import MIXED, STUDY, browse_study, mixed_study, png_size
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from study_helpers import assert_user_error, describe, hpo, hpo_ok, load

from hpo.browse.report import IMAGE_SIZE, importances, write_report

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

IMAGES = (
    "pareto_front.png",
    "hypervolume.png",
    "importance_val_accuracy.png",
    "importance_tokens_per_sec.png",
    "learning_curves.png",
)


def _report(url: str, name: str, out: Path) -> str:
    result = hpo_ok("report", name, "--storage", url, "--out", str(out))
    assert f"report of {name}: {out / 'index.html'}" in result.stdout, describe(result)
    return (out / "index.html").read_text(encoding="utf-8")


def _check_images(out: Path, page: str) -> None:
    referenced = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(referenced) == sorted(IMAGES)  # relative paths beside the page
    for name in IMAGES:
        assert png_size(out / name) == IMAGE_SIZE == (1000, 600)
        assert (out / name).stat().st_size > 5_000  # drawn, not blank


def test_report_of_a_real_study(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    url = browse_study(tmp_path_factory)
    out = tmp_path / "report"  # created by the command
    page = _report(url, STUDY, out)
    _check_images(out, page)
    assert sorted(p.name for p in out.iterdir()) == sorted([*IMAGES, "index.html"])
    study = load(url, STUDY)
    assert f"<h1>Study {STUDY}</h1>" in page
    assert "val_accuracy, tokens_per_sec" in page
    # The Pareto table: one row per front trial, its sample included.
    rows = re.findall(r"<tr><td class=\"num\">(\d+)</td>", page)
    assert sorted(map(int, rows)) == sorted(t.number for t in study.best_trials)
    for trial in study.best_trials:
        assert f"<code>{html.escape(trial.user_attrs['sample'])}</code>" in page
    # Self-contained: no scripts, nothing fetched, no absolute paths.
    assert "<script" not in page and "http" not in page and str(tmp_path) not in page


def test_report_of_every_outcome_and_two_device_counts(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    url = mixed_study(tmp_path_factory)
    page = _report(url, MIXED, tmp_path)  # an existing folder will do
    _check_images(tmp_path, page)
    assert "not completed: 1 diverged, 1 infeasible" in page
    assert "2 complete, 1 pruned, 1 failed, 0 running (target 4)" in page


def test_too_few_trials_for_importances_make_an_image_that_says_so(sqlite_url: str, tmp_path: Path) -> None:
    study = optuna.create_study(storage=sqlite_url, directions=["maximize", "maximize"], study_name="one")
    study.set_metric_names(["val_accuracy", "tokens_per_sec"])
    study.add_trial(
        optuna.trial.create_trial(
            values=[0.3, 1000.0],
            params={"lr": 0.01},
            distributions={"lr": FloatDistribution(1e-3, 1e-1, log=True)},
            user_attrs={"val_accuracy": 0.3, "tokens_per_sec": 1000.0, "n_devices": 1},
            state=TrialState.COMPLETE,
        )
    )
    assert "at least 2 completed trials" in str(importances(study, 0))
    report = write_report(study, {}, tmp_path)
    assert [p.name for p in report.images] == list(IMAGES)
    for path in report.images:
        assert png_size(path) == IMAGE_SIZE
    page = report.index.read_text()
    assert "Pareto trials (1)" in page


def test_report_of_an_empty_study(sqlite_url: str, tmp_path: Path) -> None:
    optuna.create_study(storage=sqlite_url, directions=["maximize", "maximize"], study_name="empty")
    page = _report(sqlite_url, "empty", tmp_path)
    assert "no completed trials yet" in page
    for name in ("pareto_front.png", "hypervolume.png", "importance_value_0.png", "learning_curves.png"):
        assert png_size(tmp_path / name) == IMAGE_SIZE


def test_nonexistent_study_is_one_error_line(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    url = browse_study(tmp_path_factory)
    result = hpo("report", "nope", "--storage", url, "--out", str(tmp_path / "out"))
    assert_user_error(result, "study 'nope' does not exist", "hpo studies")
    assert not (tmp_path / "out").exists()


def test_out_that_is_a_file_is_one_error_line(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    url = browse_study(tmp_path_factory)
    (tmp_path / "file").write_text("")
    assert_user_error(hpo("report", STUDY, "--storage", url, "--out", str(tmp_path / "file")), "--out", "not a folder")


def test_missing_database_is_one_error_line(sqlite_url: str, tmp_path: Path) -> None:
    result = hpo("report", STUDY, "--storage", sqlite_url, "--out", str(tmp_path / "out"))
    assert_user_error(result, "no database file")
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()
