"""ASHA's promotion type: trials paused at a rung resume, as new trials, once it ranks them high.

With `pruner.pause`, a rung pauses the trials it does not keep (hpo.study.objective): each is
told PRUNED with reason `paused` and its values at the rung, and its run's state at the
rung stays on disk (hpo.store.states). Before a worker draws a new configuration, it promotes
the best paused trial that now ranks in its rung's top floor(n/eta), the highest rung
first, as asynchronous successive halving does (Li et al. 2020): it queues a trial with
the same parameters and seed that resumes the paused run at the rung. An Optuna trial
cannot be reopened once told, hence a new one; its `continues` attribute names the paused
trial and the tokens it had trained, which it does not count again.

A rung counts every configuration once. A promoted trial's new trial carries the paused
trial's learning curve (hpo.store.curves), but the paused trial stands for the configuration at
the rungs it reached; a retry, which carries its lost trial's curve too, stands for it.
Promotions are made under the study lock, so no paused trial is promoted twice; behind a
gRPC proxy, which has no lock, workers do not promote.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.config.search import PrunerConfig
from hpo.config.training import rung_state
from hpo.record.attrs import (
    SEED,
    STATE_FILES,
    Continuation,
    RungRecord,
    read_continuation,
    read_reason,
    read_rung,
    retried_numbers,
)
from hpo.record.outcome import Reason
from hpo.search.pruning import promotable, rung_values
from hpo.store.curves import Curves
from hpo.store.states import StateFolder


def superseded(trials: Sequence[FrozenTrial]) -> set[int]:
    """Trials whose run goes on in a later trial: retried, or paused and promoted."""
    continued = {c.trial for t in trials if (c := read_continuation(t)) is not None}
    return retried_numbers(trials) | continued


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
    lost = retried_numbers(trials)
    resumed_at = {t.number: c.tokens for t in trials if (c := read_continuation(t)) is not None}
    return {
        n: rung_values(pruner, e, objectives)
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
    paused = {t.number: (t, record) for t in trials if (record := _paused_at(t)) is not None and t.number not in gone}
    for rung in sorted({record.rung_tokens for _, record in paused.values()}, reverse=True):
        for number in promotable(rung_points(trials, curves, study.study_name, rung, pruner, objectives), pruner.eta):
            if number not in paused or paused[number][1].rung_tokens != rung:
                continue  # it went on from this rung, or it paused at a later one
            trial, record = paused[number]
            files = trial.system_attrs.get(STATE_FILES) or [(number, None)]
            name = files[0][1]  # its own file, where its run kept the state at the rung
            if name is None or not (states.path / rung_state(name, rung)).is_file():
                continue  # the state is on a host whose folder this worker does not see
            continues = Continuation(number, record.event.tokens, int(trial.user_attrs[SEED]))
            study.add_trial(
                optuna.trial.create_trial(
                    state=TrialState.WAITING,
                    params=trial.params,
                    distributions=trial.distributions,
                    user_attrs=continues.as_attrs(),
                    system_attrs={STATE_FILES: [(number, rung_state(name, rung))]},
                )
            )
            return number
    return None


def _paused_at(trial: FrozenTrial) -> RungRecord | None:
    """Where a paused trial paused; None for any other trial."""
    if trial.state != TrialState.PRUNED or read_reason(trial) != Reason.PAUSED:
        return None
    return read_rung(trial)
