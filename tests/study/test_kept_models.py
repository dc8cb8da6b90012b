"""Kept models (`storage.keep_models`): real `hpo` processes, real databases, real training.

A study keeps the trained weights of its Pareto front's trials (`front`, the default), of
every complete trial (`all`) or of none, as Optuna artifacts beside its SQLite database;
`hpo export --trial N --model FILE` writes one out, and `hpo dashboard` serves them.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState
from study_helpers import assert_user_error, free_port, hpo, hpo_ok, load, start_hpo, tiny, trials, wait_for

from hpo.config.compose import compose, hpo_config
from hpo.errors import HpoError
from hpo.store.artifacts import model_name, own_model
from hpo.store.optuna_internals import ARTIFACTS_ATTR_PREFIX
from hpo.study.models import KeptModels, models_of
from hpo.trainer.checkpoint import load_checkpoint

optuna.logging.set_verbosity(optuna.logging.WARNING)

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]


def _artifacts(trial: FrozenTrial) -> dict[str, dict[str, str]]:
    """The artifact records in a trial's system attributes, by artifact id."""
    return {
        key.removeprefix(ARTIFACTS_ATTR_PREFIX): json.loads(value)
        for key, value in trial.system_attrs.items()
        if key.startswith(ARTIFACTS_ATTR_PREFIX)
    }


def _files(folder: Path) -> set[str]:
    """The artifact files of a folder (a running worker's scratch subfolder aside)."""
    return {p.name for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set()


def _generates(path: Path) -> str:
    """Text sampled from a model file, loaded the two ways a user would."""
    raw = torch.load(path, map_location="cpu", weights_only=True)  # no pickle: a file cannot run code
    assert {"model", "config", "tokenizer"} <= raw.keys()
    model, _, tokenizer = load_checkpoint(path)
    prompt = torch.tensor([[int(tokenizer.encode("T")[0])]])
    out = model.generate(prompt, 24, generator=torch.Generator().manual_seed(0))
    text = tokenizer.decode(out[0].tolist())
    assert len(text) == 25
    return text


@pytest.fixture(scope="module")
def front_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """Five tiny trials of a random search with the default keep_models=front."""
    folder = tmp_path_factory.mktemp("front")
    url = f"sqlite:///{folder}/hpo.db"
    hpo_ok("run", "--quiet", "--storage", url, *tiny("front", 5, "sampler=random"))
    return url, folder / "hpo.db-artifacts"


def test_front_keeps_exactly_the_models_of_the_front(front_study: tuple[str, Path]) -> None:
    url, folder = front_study
    study = load(url, "front")
    front = {t.number for t in study.best_trials}
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 5 and front
    kept = {t.number: _artifacts(t) for t in study.trials if _artifacts(t)}
    assert set(kept) == front  # the front's trials, each with exactly one model: its own
    for number, records in kept.items():
        ((_, record),) = records.items()
        assert record["filename"] == model_name(number)
    assert _files(folder) == {a for records in kept.values() for a in records}  # no file left of a dropped model
    assert not [p for p in folder.iterdir() if not p.is_file()]  # the running trials' scratch folder is gone
    for trial in complete:  # the stored config names no scratch file
        assert trial.user_attrs["config"]["train"]["checkpoint"] is None


def test_a_kept_model_loads_without_pickle_and_generates_text(front_study: tuple[str, Path]) -> None:
    url, folder = front_study
    for trial in load(url, "front").best_trials:
        model = own_model(trial)
        assert model is not None
        text = _generates(folder / model.artifact_id)
        print(f"trial {trial.number}: {text!r}")


def test_export_writes_a_front_trials_model(front_study: tuple[str, Path], tmp_path: Path) -> None:
    url, folder = front_study
    best = load(url, "front").best_trials[0]
    out = tmp_path / "out.pt"
    result = hpo_ok("export", "front", "--storage", url, "--trial", str(best.number), "--model", str(out))
    assert str(out) in result.stdout
    model = own_model(best)
    assert model is not None
    assert out.read_bytes() == (folder / model.artifact_id).read_bytes()
    _generates(out)
    hpo_ok("export", "front", "--storage", url, "--trial", str(best.number), "--model", str(out))  # replaced


def test_export_of_a_trial_without_a_model_says_why_in_one_line(front_study: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = front_study
    study = load(url, "front")
    front = {t.number for t in study.best_trials}
    out = tmp_path / "out.pt"
    dominated = [t.number for t in study.trials if t.number not in front]
    assert dominated, "five random trials of two objectives with a front of five: rerun"
    export = ("export", "front", "--storage", url, "--model", str(out), "--trial")
    assert_user_error(hpo(*export, str(dominated[0])), f"trial {dominated[0]}", "not on the Pareto front")
    assert_user_error(hpo(*export, "99"), "no trial 99")
    assert_user_error(hpo("export", "front", "--storage", url, "--model", str(out)), "--trial N")
    assert_user_error(hpo("export", "front", "--storage", url), "--format")
    assert not out.exists()


def test_dashboard_serves_the_kept_models(front_study: tuple[str, Path]) -> None:
    url, folder = front_study
    study = load(url, "front")
    trial = study.best_trials[0]
    model = own_model(trial)
    assert model is not None
    port = free_port()
    process = start_hpo("dashboard", "--storage", url, "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            assert process.poll() is None, process.communicate()
            try:
                with urllib.request.urlopen(f"{base}/api/meta", timeout=5) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(answers, 60, "the dashboard to answer")
        path = f"/artifacts/{study._study_id}/{trial._trial_id}/{model.artifact_id}"
        with urllib.request.urlopen(base + path, timeout=30) as response:
            assert response.read() == (folder / model.artifact_id).read_bytes()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.communicate(timeout=30)


def test_keep_all_keeps_every_complete_trials_model(sqlite_url: str, tmp_path: Path) -> None:
    hpo_ok("run", "--quiet", "--storage", sqlite_url, *tiny("all", 3, "sampler=random", "storage.keep_models=all"))
    kept = {t.number: _artifacts(t) for t in trials(sqlite_url, "all")}
    assert all(len(records) == 1 for records in kept.values()) and len(kept) == 3
    assert _files(tmp_path / "hpo.db-artifacts") == {a for records in kept.values() for a in records}
    out = tmp_path / "one.pt"
    hpo_ok("export", "all", "--storage", sqlite_url, "--trial", "2", "--model", str(out))
    _generates(out)


def test_keep_none_keeps_none_and_makes_no_folder(sqlite_url: str, tmp_path: Path) -> None:
    hpo_ok("run", "--quiet", "--storage", sqlite_url, *tiny("none", 2, "storage.keep_models=none"))
    assert not any(_artifacts(t) for t in trials(sqlite_url, "none"))
    assert not (tmp_path / "hpo.db-artifacts").exists()
    export = hpo("export", "none", "--storage", sqlite_url, "--trial", "0", "--model", str(tmp_path / "m.pt"))
    assert_user_error(export, "keeps no models", "storage.keep_models=none")


def test_a_bad_keep_models_is_one_line_before_any_database(sqlite_url: str, tmp_path: Path) -> None:
    result = hpo("run", "--storage", sqlite_url, *tiny("bad", 1, "storage.keep_models=best"))
    assert_user_error(result, "storage.keep_models='best'", "storage.keep_models=front")
    assert not list(tmp_path.iterdir())


def test_postgres_keeps_models_only_in_a_named_folder(postgres_url: str, tmp_path: Path) -> None:
    result = hpo_ok("run", "--quiet", "--storage", postgres_url, *tiny("pg", 1))
    notes = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(notes) == 1 and notes[0].startswith("note: no models are kept"), result.stderr
    assert "storage.artifacts=DIR" in notes[0]
    assert not any(_artifacts(t) for t in trials(postgres_url, "pg"))

    folder = tmp_path / "models"
    hpo_ok("run", "--quiet", "--storage", postgres_url, *tiny("pg-kept", 2, f"storage.artifacts={folder}"))
    study = load(postgres_url, "pg-kept")
    kept = {t.number for t in study.trials if _artifacts(t)}
    assert kept == {t.number for t in study.best_trials}
    out = tmp_path / "out.pt"
    hpo_ok("export", "pg-kept", "--storage", postgres_url, "--trial", str(min(kept)), "--model", str(out))
    _generates(out)


def test_front_is_refused_behind_a_grpc_proxy_with_a_folder(tmp_path: Path) -> None:
    proxied = optuna.storages.InMemoryStorage()  # what a worker behind a proxy has: no SQL
    folder = f"storage.artifacts={tmp_path / 'models'}"
    with pytest.raises(HpoError, match=r"storage\.keep_models=all or none, or give the workers the database URL"):
        models_of(proxied, hpo_config(compose([folder])))
    kept = models_of(proxied, hpo_config(compose([folder, "storage.keep_models=all"])))
    assert isinstance(kept, KeptModels)
    assert models_of(proxied, hpo_config(compose())) is None  # no folder: none kept (a note says so)


def test_front_follows_the_trials_of_two_workers(tmp_path: Path) -> None:
    """Upload, tell, drop, by two workers interleaved: exactly the front's models stay."""
    url = f"sqlite:///{tmp_path}/hpo.db"
    config = hpo_config(compose())
    storage = optuna.storages.RDBStorage(url)
    directions = ["maximize", "maximize"]
    optuna.create_study(study_name="two", storage=storage, directions=directions)
    a, b = (optuna.load_study(study_name="two", storage=storage) for _ in range(2))
    keeper_a, keeper_b = models_of(storage, config), models_of(storage, config)
    assert keeper_a is not None and keeper_b is not None

    def checkpoint(keeper: KeptModels, number: int) -> Path:
        path = keeper.checkpoint(number)
        path.write_bytes(b"weights of %d" % number)
        return path

    t0, t1 = a.ask(), b.ask()
    keeper_a.keep_if_worth_it(a, t0, [0.5, 100.0], checkpoint(keeper_a, 0))
    keeper_b.keep_if_worth_it(b, t1, [0.6, 200.0], checkpoint(keeper_b, 1))  # t0 is not told: both kept
    a.tell(t0, [0.5, 100.0])
    keeper_a.drop_stale(a)  # t1 still runs: nothing dominates t0 yet
    assert len(_files(tmp_path / "hpo.db-artifacts")) == 2
    b.tell(t1, [0.6, 200.0])
    keeper_b.drop_stale(b)
    keeper_a.drop_stale(a)  # the same model dropped twice: nothing happens
    t2 = a.ask()
    keeper_a.keep_if_worth_it(a, t2, [0.4, 300.0], checkpoint(keeper_a, 2))
    a.tell(t2, [0.4, 300.0])
    t3 = b.ask()
    dominated = checkpoint(keeper_b, 3)
    keeper_b.keep_if_worth_it(b, t3, [0.55, 150.0], dominated)  # t1 dominates it: never stored
    b.tell(t3, [0.55, 150.0])
    keeper_b.drop_stale(b)
    assert not dominated.exists()
    fresh = optuna.load_study(study_name="two", storage=url)
    assert {t.number for t in fresh.trials if _artifacts(t)} == {1, 2} == {t.number for t in fresh.best_trials}
    assert _files(tmp_path / "hpo.db-artifacts") == {a for t in fresh.trials for a in _artifacts(t)}
