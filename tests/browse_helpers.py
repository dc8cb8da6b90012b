"""Real tiny studies shared by the browsing tests (notes, figures, dashboard, report).

Each is made once per test session by a real `hpo run` (the worker publishes notes and
figures as it goes) and then only read, so the four test modules share it instead of
training it four times.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import optuna
import pytest
from study_helpers import hpo_ok, tiny

STUDY = "browse"  # three sampled trials: the study of the browser test
MIXED = "mixed"  # a diverged trial, an infeasible one, a 2-device one and a 1-device one
MIXED_OVERRIDES = (
    "optim.grad_clip=0",
    "search_space.lr={low: 1.0e-3, high: 1.0e4, log: true}",
    "search_space.n_devices={choices: [1, 2, 64]}",
    "study.baselines=[{n_head: 2, lr: 1.0e4, n_devices: 1}, {n_head: 2, lr: 0.003, n_devices: 64},"
    " {n_head: 4, lr: 0.003, n_devices: 2}, {n_head: 2, lr: 0.003, n_devices: 1}]",
)

_made: dict[str, str] = {}


def _make(tmp_path_factory: pytest.TempPathFactory, name: str, *overrides: str) -> str:
    if name not in _made:
        url = f"sqlite:///{tmp_path_factory.mktemp(name)}/hpo.db"
        hpo_ok("run", *overrides, "--storage", url, "--quiet")
        _made[name] = url
    return _made[name]


def browse_study(tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of a database holding STUDY: `hpo run` of three tiny trials."""
    return _make(tmp_path_factory, STUDY, *tiny(STUDY, 3))


def mixed_study(tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of a database holding MIXED: every outcome a trial can have, and two device counts."""
    return _make(tmp_path_factory, MIXED, *tiny(MIXED, 4, *MIXED_OVERRIDES))


def storage(url: str) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(url)


def note_of(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    """The dashboard note of a trial, as optuna-dashboard reads it back."""
    from optuna_dashboard._note import get_note_from_system_attrs

    attrs = study._storage.get_study_system_attrs(study._study_id)
    return get_note_from_system_attrs(attrs, trial._trial_id)["body"]


def figures_of(study: optuna.Study) -> dict[str, dict]:
    """The study's dashboard figures by id, as optuna-dashboard reads them back."""
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

    attrs = study._storage.get_study_system_attrs(study._study_id)
    return {k: json.loads(v) for k, v in get_plotly_graph_objects(attrs).items()}


def graph_keys(study: optuna.Study) -> list[str]:
    """Every study system attribute holding a chunk of a dashboard figure."""
    return sorted(k for k in study._storage.get_study_system_attrs(study._study_id) if k.startswith("dashboard:plot"))


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; AssertionError if it is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13, f"{path} has no IHDR chunk first"
    width, height = struct.unpack(">II", data[16:24])
    return width, height
