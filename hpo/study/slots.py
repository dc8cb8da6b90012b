"""Which trials count against a study's target.

The target (`study.n_trials`) counts trials that ran to an outcome. A trial lost to a dead
worker or to Ctrl-C is retried, and its retry holds its slot; a surplus claim of a worker
behind the gRPC proxy never ran (hpo.study.worker). Neither counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.record.attrs import REASON, RETRY_HISTORY, read_reason, retried_numbers
from hpo.record.outcome import LOST_REASONS, Reason
from hpo.store.optuna_internals import count_trials, system_attr_values


def slot_takers(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Trials that hold a slot of the target, or will once they run: all but those lost to a
    dead worker (their retry holds the slot) or to Ctrl-C, and surplus claims."""
    retried = retried_numbers(trials)
    return [t for t in trials if t.number not in retried and read_reason(t) not in LOST_REASONS]


def ran(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """All trials but surplus claims: those are bookkeeping of the proxy's workers, and
    counting them as failures would tell the user that something went wrong."""
    return [t for t in trials if read_reason(t) != Reason.SURPLUS]


STARTED = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def counted_trials(study: optuna.Study) -> int:
    """Trials that took a slot of the target: started, and not lost (`slot_takers`). Each claim
    counts them under the study lock, so they are counted in the database, not read: the
    started trials that were not retried, less those of them lost (a complete trial has no
    reason, so only the others can be)."""
    retried = {number for history in system_attr_values(study, RETRY_HISTORY) for number in history}
    started = count_trials(study, STARTED, numbers_not_in=retried)
    lost_reasons = (REASON, [reason.value for reason in LOST_REASONS])
    lost = count_trials(
        study, [s for s in STARTED if s != TrialState.COMPLETE], numbers_not_in=retried, user_attr=lost_reasons
    )
    return started - lost
