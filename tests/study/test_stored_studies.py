"""Studies stored by an earlier hpo go on with this one.

tests/study/fixtures/before-layers.db was written by hpo 0.1.0 as it stood before the
package took its layers (commit 70fed95, a flat `hpo/`), with `hpo run` and the tiny
overrides of study_helpers.TINY: `before-layers` (pruner=moasha, 2 of its trials stopped at
a rung) and `before-layers-plain` (pruner=none, 2 trials). before-layers.show.txt is what
that hpo printed for `hpo show before-layers`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from optuna.trial import TrialState
from study_helpers import hpo_ok, load

from hpo.record.attrs import config_from_stored, read_rung

FIXTURES = Path(__file__).parent / "fixtures"

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def stored(tmp_path: Path) -> str:
    """A copy of the fixture database (a resume writes to it)."""
    shutil.copy(FIXTURES / "before-layers.db", tmp_path / "hpo.db")
    return f"sqlite:///{tmp_path / 'hpo.db'}"


def test_a_study_stored_before_resumes_and_completes_a_trial(stored: str) -> None:
    before = load(stored, "before-layers-plain").trials
    assert [t.state for t in before] == [TrialState.COMPLETE] * 2
    hpo_ok("resume", "before-layers-plain", "--n-trials", "1", "--storage", stored, "--quiet")
    after = load(stored, "before-layers-plain").trials
    assert len(after) == 3
    assert after[2].state == TrialState.COMPLETE
    assert after[2].user_attrs["config"] == {**before[0].user_attrs["config"], **after[2].user_attrs["config"]}
    assert {**before[0].user_attrs, **after[2].user_attrs}.keys() == after[2].user_attrs.keys()


def test_a_study_stored_before_shows_as_it_did(stored: str) -> None:
    shown = hpo_ok("show", "before-layers", "--storage", stored).stdout
    assert shown == (FIXTURES / "before-layers.show.txt").read_text()
    study = load(stored, "before-layers")
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert len(pruned) == 2
    assert all(read_rung(t) is not None for t in pruned)  # the rung records read back typed
    config = config_from_stored(study.user_attrs["hpo_config"])
    assert config.pruner.name == "moasha"
    assert config.model.n_layer == study.user_attrs["hpo_config"]["train"]["model"]["n_layer"]
