"""ASHA's promotion on hand-made rungs of a real SQLite study: which paused trial resumes, once.

tests/test_pruning.py runs whole studies that pause and promote trials.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hpo.config.search import PrunerConfig
from hpo.config.settings import HpoConfig, StorageConfig
from hpo.config.training import rung_state
from hpo.errors import HpoError
from hpo.record.attrs import CONTINUES, REASON, STATE_FILES
from hpo.record.outcome import EvalEvent, Reason
from hpo.search.promotion import promote, rung_points
from hpo.store.curves import CurveStore
from hpo.store.states import StateFolder
from hpo.store.storage import open_storage
from hpo.study.objective import run_seed, states_of, trial_seed

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

OBJECTIVES = ("val_accuracy", "tokens_per_sec")
PRUNER = PrunerConfig(name="moasha", pause=True)  # eta 3


class Rungs:
    """A study whose trials paused at rungs, with their points and state files on disk."""

    def __init__(self, url: str, folder: Path) -> None:
        self.storage = open_storage(url)
        self.study = optuna.create_study(storage=self.storage, directions=["maximize", "maximize"])
        self.curves = CurveStore(self.storage.engine)
        self.states = StateFolder(folder)
        folder.mkdir()

    def pause(self, loss: float, speed: float, rung: int = 1000, state: bool = True) -> int:
        """A trial paused at `rung` with that validation loss and throughput there."""
        number = len(self.study.get_trials(deepcopy=False))
        name = f"trial-{number}-0123456789ab.pt"
        event = EvalEvent(rung // 100, rung, loss, loss, 0.2, speed)
        self.study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.PRUNED,
                params={"lr": 0.001 * (number + 1)},
                distributions={"lr": FloatDistribution(1e-4, 1.0)},
                user_attrs={REASON: Reason.PAUSED, "rung": {"rung_tokens": rung, **vars(event)}, "seed": 100 + number},
                system_attrs={STATE_FILES: [(number, name)]},
            )
        )
        for tokens in range(1000, rung + 1, 1000):  # its points, up to the rung
            self.curves.record(self.study.study_name, number, EvalEvent(tokens // 100, tokens, 3, loss, 0.2, speed))
        if state:
            (self.states.path / name).write_bytes(b"latest")
            (self.states.path / rung_state(name, rung)).write_bytes(b"at the rung")
        return number

    def promote(self) -> int | None:
        return promote(self.study, self.curves, self.states, PRUNER, OBJECTIVES)

    def waiting(self) -> list[optuna.trial.FrozenTrial]:
        return self.study.get_trials(states=(TrialState.WAITING,))


@pytest.fixture
def rungs(sqlite_url: str, tmp_path: Path) -> Rungs:
    return Rungs(sqlite_url, tmp_path / "states")


def test_a_rung_promotes_its_best_paused_trial_once(rungs: Rungs) -> None:
    best = rungs.pause(loss=2.0, speed=900)  # lowest loss and fastest: dominates both others
    rungs.pause(loss=2.5, speed=500)
    rungs.pause(loss=3.0, speed=800)
    assert rungs.promote() == best
    (queued,) = rungs.waiting()
    assert queued.params == rungs.study.trials[best].params
    assert queued.user_attrs[CONTINUES] == {"trial": best, "tokens": 1000, "seed": 100 + best}
    # it resumes the paused run's state at the rung
    assert queued.system_attrs[STATE_FILES] == [[best, f"trial-{best}-0123456789ab.pt.rung-1000"]]
    # the rung's top floor(3/3) = 1 is taken: nothing more until the rung fills
    assert rungs.promote() is None
    for _ in range(3):
        rungs.pause(loss=4.0, speed=100)
    assert rungs.promote() is not None  # 6 trials: the second best of the rung goes on too
    assert len(rungs.waiting()) == 2


def test_a_rung_of_fewer_than_eta_trials_promotes_none(rungs: Rungs) -> None:
    rungs.pause(loss=2.0, speed=900)
    rungs.pause(loss=3.0, speed=100)
    assert rungs.promote() is None and not rungs.waiting()


def test_a_paused_trial_without_its_state_here_is_passed_over(rungs: Rungs) -> None:
    rungs.pause(loss=2.0, speed=900, state=False)  # its state is on another host
    second = rungs.pause(loss=2.1, speed=850)
    for _ in range(4):
        rungs.pause(loss=4.0, speed=100)
    assert rungs.promote() == second


def test_the_highest_rung_promotes_first(rungs: Rungs) -> None:
    for speed in (300, 200, 100):
        rungs.pause(loss=1.0, speed=speed)
    # three trials passed the first rung (its top 2 of 6 are trial 0 and the first of these)
    high = [rungs.pause(loss=2.0 + i, speed=500 - i, rung=3000) for i in range(3)]
    assert rungs.promote() == high[0]
    assert rungs.promote() == 0  # then the first rung's best paused trial


def test_a_promotion_stands_for_its_trial_only_above_the_rung_it_resumed_at(rungs: Rungs) -> None:
    paused = [rungs.pause(loss=2.0 + i, speed=900 - i) for i in range(3)]
    rungs.promote()
    (queued,) = rungs.waiting()
    # the promotion starts: it carries the paused run's points, then reaches the next rung
    name = rungs.study.study_name
    rungs.curves.take_over(name, paused[0], queued.number)
    rungs.curves.record(name, queued.number, EvalEvent(30, 3000, 2.0, 1.5, 0.3, 880))
    at_first = rung_points(rungs.study.get_trials(), rungs.curves, name, 1000, PRUNER, OBJECTIVES)
    assert sorted(at_first) == paused  # not twice: the paused trial stands for it there
    at_next = rung_points(rungs.study.get_trials(), rungs.curves, name, 3000, PRUNER, OBJECTIVES)
    assert sorted(at_next) == [queued.number]


def test_a_resumed_run_trains_with_the_seed_of_the_run_it_resumes() -> None:
    fresh = optuna.trial.create_trial(state=TrialState.WAITING)
    fresh.number = 7
    assert run_seed(fresh, study_seed=1) == trial_seed(1, 7)
    retry = optuna.trial.create_trial(state=TrialState.WAITING, system_attrs={"failed_trial": 3})
    retry.number = 9
    assert run_seed(retry, study_seed=1) == trial_seed(1, 3)  # the lost trial's
    continues = {CONTINUES: {"trial": 4, "tokens": 1000, "seed": 12345}}
    promotion = optuna.trial.create_trial(state=TrialState.WAITING, user_attrs=continues)
    assert run_seed(promotion, study_seed=1) == 12345  # the paused trial's seed
    retried_promotion = optuna.trial.create_trial(
        state=TrialState.WAITING, user_attrs=continues, system_attrs={"failed_trial": 5}
    )
    assert run_seed(retried_promotion, study_seed=1) == 12345


def test_pausing_needs_the_study_lock_and_a_state_folder(tmp_path: Path) -> None:
    space = {"n_layer": {"low": 1, "high": 2}}
    pausing = HpoConfig(search_space=space, pruner=PRUNER)
    with pytest.raises(HpoError, match="behind a gRPC proxy"):  # a storage without SQL, so without the lock
        states_of(optuna.storages.InMemoryStorage(), pausing)
    configured = HpoConfig(search_space=space, pruner=PRUNER, storage=StorageConfig(states=str(tmp_path)))
    with pytest.raises(HpoError, match="behind a gRPC proxy"):
        states_of(optuna.storages.InMemoryStorage(), configured)
    assert states_of(optuna.storages.InMemoryStorage(), HpoConfig(search_space=space)) is None  # not pausing
    database = open_storage(f"sqlite:///{tmp_path / 'hpo.db'}")
    assert states_of(database, pausing) == StateFolder(tmp_path / "hpo.db-states")
    with pytest.raises(HpoError, match=r"leave storage\.save_states on"):  # before any database is opened
        HpoConfig(search_space=space, pruner=PRUNER, storage=StorageConfig(save_states=False))
