"""ASHA's promotion type: trials paused at a rung resume, as new trials, once it ranks them high.

With `pruner.pause`, a rung pauses the trials it does not keep (hpo.objective): each is
told PRUNED with reason `paused` and its values at the rung, and its run's state at the
rung stays on disk (hpo.states). Before a worker draws a new configuration, it promotes
the best paused trial that now ranks in its rung's top floor(n/eta), the highest rung
first, as asynchronous successive halving does (Li et al. 2020): it queues a trial with
the same parameters and seed that resumes the paused run at the rung. An Optuna trial
cannot be reopened once told, hence a new one; its `continues` attribute names the paused
trial and the tokens it had trained, which it does not count again.

A rung counts every configuration once. A promoted trial's new trial carries the paused
trial's learning curve (hpo.curves), but the paused trial stands for the configuration at
the rungs it reached; a retry, which carries its lost trial's curve too, stands for it.
Promotions are made under the study lock, so no paused trial is promoted twice; behind a
gRPC proxy, which has no lock, workers do not promote.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.curves import Curves
from hpo.pruning import PrunerConfig, promotable
from hpo.states import ATTR_STATE, StateFolder
from hpo.study import ATTR_REASON, retried_numbers
from hpo.trainspec import rung_state

PAUSED = "paused"  # the reason of a paused trial
ATTR_CONTINUES = "continues"  # {"trial", "tokens", "seed"}: the paused trial that this one resumes


def superseded(trials: Sequence[FrozenTrial]) -> set[int]:
    """Trials whose run goes on in a later trial: retried, or paused and promoted."""
    continued = {t.user_attrs[ATTR_CONTINUES]["trial"] for t in trials if ATTR_CONTINUES in t.user_attrs}
    return retried_numbers(list(trials)) | continued


def rung_points(
    trials: Sequence[FrozenTrial],
    curves: Curves,
    study: str,
    rung: int,
    pruner: PrunerConfig,
    objectives: Sequence[str],
) -> dict[int, tuple[float, ...]]:
    """What every configuration that reached `rung` showed there, each counted once: a lost
    run by its retry, a paused one by itself (not by its promotion, which only carries its
    points up to there)."""
    lost = retried_numbers(list(trials))
    resumed_at = {t.number: t.user_attrs[ATTR_CONTINUES]["tokens"] for t in trials if ATTR_CONTINUES in t.user_attrs}
    return {
        n: pruner.rung_values(e, objectives)
        for n, e in curves.at_rung(study, rung).items()
        if n not in lost and rung > resumed_at.get(n, 0)
    }


def promote(
    study: optuna.Study, curves: Curves, states: StateFolder, pruner: PrunerConfig, objectives: Sequence[str]
) -> int | None:
    """Queue the resumption of the best promotable paused trial, the highest rung first;
    the paused trial's number, or None if no paused trial ranks high enough yet."""
    trials = study.get_trials(deepcopy=False)
    gone = superseded(trials)
    paused = {t.number: t for t in trials if _is_paused(t) and t.number not in gone}
    for rung in sorted({t.user_attrs["rung"]["rung_tokens"] for t in paused.values()}, reverse=True):
        for number in promotable(rung_points(trials, curves, study.study_name, rung, pruner, objectives), pruner.eta):
            trial = paused.get(number)
            if trial is None or trial.user_attrs["rung"]["rung_tokens"] != rung:
                continue  # it went on from this rung, or it paused at a later one
            files = trial.system_attrs.get(ATTR_STATE) or [(number, None)]
            name = files[0][1]  # its own file, where its run kept the state at the rung
            if name is None or not (states.path / rung_state(name, rung)).is_file():
                continue  # the state is on a host whose folder this worker does not see
            rung_values = trial.user_attrs["rung"]
            continues = {"trial": number, "tokens": rung_values["tokens"], "seed": trial.user_attrs["seed"]}
            study.add_trial(
                optuna.trial.create_trial(
                    state=TrialState.WAITING,
                    params=trial.params,
                    distributions=trial.distributions,
                    user_attrs={ATTR_CONTINUES: continues},
                    system_attrs={ATTR_STATE: [(number, rung_state(name, rung))]},
                )
            )
            return number
    return None


def _is_paused(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.PRUNED and trial.user_attrs.get(ATTR_REASON) == PAUSED
