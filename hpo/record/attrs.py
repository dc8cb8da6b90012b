"""The attributes hpo writes on Optuna studies and trials, each with one writer and one reader.

Optuna keeps a trial's parameters, state and objective values; everything else that
makes a study's numbers trustworthy and resumable is an attribute, a JSON value under a
string key. The keys are named here and nowhere else, and the structured ones (the rung
a trial stopped at, the paused run a trial continues, the stored config) are read and
written through typed values, so a reader cannot disagree with the writer.

Stored studies outlive the code that wrote them: a key that hpo gained later takes, in an
older study, the value that keeps the behaviour the study was made with (`KEYS_ADDED`).
"""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo import __version__
from hpo.config.settings import TRAIN_KEYS, HpoConfig
from hpo.config.structured import build
from hpo.record.outcome import EvalEvent, Reason, TrialResult

# --- Study user attributes: what `hpo resume NAME` rebuilds a study from.
STUDY_CONFIG = "hpo_config"  # the resolved config (`stored_config`)
DATA_FINGERPRINT = "data_fingerprint"  # hash of the tokens and tokenizer (hpo.trainer.data)
HPO_VERSION = "hpo_version"  # also a trial attribute: the version that ran the trial
TARGET = "n_trials"  # trials that must reach an outcome; `hpo resume --n-trials` raises it
RETRAIN_OF = "retrain_of"  # the study whose front `hpo retrain` trains again in this one
HARDWARE = "hardware"  # also a trial attribute: what its throughput was measured on (hpo.study.hardware)

# --- Trial user attributes (besides the TrialResult's scalar fields, `RESULT_ATTRS`).
REASON = "failure_reason"  # a Reason, for a trial that did not complete
MESSAGE = "failure_message"  # the reason in a sentence
RUNG = "rung"  # RungRecord: where a rung stopped or paused the trial, and what it showed there
CONTINUES = "continues"  # Continuation: the paused run this trial resumes (hpo.search.promotion)
RETRAINS = "retrains"  # Source: the trial of another study that this one trains again (`hpo retrain`)
SEED = "seed"
CONFIG = "config"  # the trial's resolved RunSpec
DEVICES = "devices"  # the device ids it leased
HOST = "host"
OPTUNA_VERSION = "optuna_version"
CURVE = "curve"  # the learning curve of a completed trial (others: hpo.store.curves)
# The TrialResult fields stored one attribute each (the dashboard lists them); the curve
# is stored as CURVE.
RESULT_ATTRS: tuple[str, ...] = tuple(f.name for f in fields(TrialResult) if f.name != "curve")
CONSTRAINT = "infeasible"  # the trial's constraint: 1 when its configuration cannot run here, else 0

# --- Trial system attributes: bookkeeping that Optuna copies into a lost trial's retry.
# Optuna's retry of a lost trial writes RETRY_HISTORY: the numbers of the runs it retries
# (`RetryHeartbeatStaleTrialCallback.retry_history` reads it).
RETRY_HISTORY = "retry_history"
STATE_FILES = "hpo:state"  # [(trial number, file name), ...] of its training states (hpo.store.states)
HEARTBEAT = "hpo:heartbeat"  # last beat of a worker behind the gRPC proxy (hpo.store.grpc)
CURVE_POINT = "hpo:curve:"  # prefix of one learning-curve point each, behind the proxy (hpo.store.curves)

# Keys of the stored config that hpo gained after studies were stored, with the value that
# an older study resumes with: the behaviour it was made with.
KEYS_ADDED: dict[str, Any] = {"sampler.pruned_trials": "last", "storage.keep_models": "none", "study.hardware": "same"}


def stored_config(config: HpoConfig) -> dict[str, Any]:
    """The config as a study keeps it: the training keys nested under `train`, as every
    stored study has them (older hpo versions read it back)."""
    data = config.to_dict()
    return {"train": {key: data.pop(key) for key in TRAIN_KEYS}, **data}


def config_from_stored(stored: Mapping[str, Any]) -> HpoConfig:
    """The HpoConfig of a stored config, keys added since it was stored included."""
    data = {key: value for key, value in stored.items() if key != "train"}
    data.update(stored.get("train", {}))
    for dotted, value in KEYS_ADDED.items():
        group, key = dotted.split(".")
        if group in data and key not in data[group]:
            data[group] = {**data[group], key: value}
    return build(HpoConfig, data)


def mixed_hardware(study: optuna.Study) -> bool:
    """Whether the study lets workers on different hardware join (`study.hardware=mixed`):
    only then may its trials need reading per hardware."""
    return bool(study.user_attrs.get(STUDY_CONFIG, {}).get("study", {}).get("hardware") == "mixed")


def target(study: optuna.Study) -> int:
    """The study's trial target (0 for a study that hpo did not make)."""
    return int(study.user_attrs.get(TARGET, 0))


@dataclass(frozen=True)
class RungRecord:
    """Where a rung stopped or paused a trial, the learning-curve point it judged, and the
    trial's token budget (what stopping it saved is read from here, not from its config:
    a summary of 10,000 trials then decodes no config). None for a budget in steps or
    seconds, and in records that hpo wrote before it kept the budget here (BUDGET_KEPT)."""

    rung_tokens: int
    event: EvalEvent
    budget_tokens: int | None = None

    def values(self, names: Sequence[str]) -> list[float]:
        """The trial's values there, in the order of the study's objective names."""
        return [getattr(self.event, name) for name in names]


BUDGET_KEPT = "budget_tokens"  # the rung record's key for the budget; older records lack it


def write_rung(trial: optuna.Trial, record: RungRecord) -> None:
    data = {"rung_tokens": record.rung_tokens, BUDGET_KEPT: record.budget_tokens, **asdict(record.event)}
    trial.set_user_attr(RUNG, data)


def read_rung(trial: FrozenTrial) -> RungRecord | None:
    data = trial.user_attrs.get(RUNG)
    if not data:
        return None
    fields = dict(data)
    rung, budget = int(fields.pop("rung_tokens")), fields.pop(BUDGET_KEPT, None)
    return RungRecord(rung, EvalEvent(**fields), None if budget is None else int(budget))


@dataclass(frozen=True)
class Continuation:
    """The paused trial whose run a promotion resumes: its number, the tokens it had
    trained (which the promotion does not count again) and its seed."""

    trial: int
    tokens: int
    seed: int

    def as_attrs(self) -> dict[str, Any]:
        """The user attributes of the new trial that continues the run."""
        return {CONTINUES: asdict(self)}


def read_continuation(trial: FrozenTrial) -> Continuation | None:
    data = trial.user_attrs.get(CONTINUES)
    return None if data is None else Continuation(int(data["trial"]), int(data["tokens"]), int(data["seed"]))


@dataclass(frozen=True)
class Source:
    """The trial that a trial of a `hpo retrain` study trains again: its study, number and
    seed (the retrain trains with it), and its objective values, by name, at the source's
    budget: the ranking that `hpo show` compares the new one with."""

    study: str
    trial: int
    seed: int
    values: dict[str, float]

    def as_attrs(self) -> dict[str, Any]:
        """The user attributes of the queued trial that trains the source again."""
        return {RETRAINS: asdict(self)}


def read_source(trial: FrozenTrial) -> Source | None:
    data = trial.user_attrs.get(RETRAINS)
    if data is None:
        return None
    values = {str(name): float(value) for name, value in data["values"].items()}
    return Source(str(data["study"]), int(data["trial"]), int(data["seed"]), values)


# What a lost trial's retry keeps of its user attributes: the run it continues or trains
# again. The rest describe the lost run and stay with it.
CARRIED = (CONTINUES, RETRAINS)


def write_reason(trial: optuna.Trial, reason: Reason, message: str) -> None:
    trial.set_user_attr(REASON, reason.value)
    trial.set_user_attr(MESSAGE, message)


def read_reason(trial: FrozenTrial) -> str | None:
    """The trial's failure reason: a Reason's value, or None if it has none. A complete
    trial has none, whatever it holds: another worker may have found its frozen worker
    lost (`worker_lost`) just before that worker woke and completed it."""
    return None if trial.state == TrialState.COMPLETE else trial.user_attrs.get(REASON)


def read_message(trial: FrozenTrial) -> str:
    return str(trial.user_attrs.get(MESSAGE, ""))


def write_provenance(trial: optuna.Trial, hardware: str) -> None:
    """Where and with what the trial ran: written for every trial, feasible or not."""
    trial.set_user_attr(HOST, platform.node())
    trial.set_user_attr(HARDWARE, hardware)
    trial.set_user_attr(HPO_VERSION, __version__)
    trial.set_user_attr(OPTUNA_VERSION, optuna.__version__)


def write_run(trial: optuna.Trial, seed: int, config: dict[str, Any], devices: Sequence[int]) -> None:
    """What the trial's run is given: its seed, resolved config and leased devices."""
    trial.set_user_attr(SEED, seed)
    trial.set_user_attr(CONFIG, config)
    trial.set_user_attr(DEVICES, list(devices))


def write_result(trial: optuna.Trial, result: TrialResult) -> None:
    for name in RESULT_ATTRS:
        trial.set_user_attr(name, getattr(result, name))
    trial.set_user_attr(CURVE, [asdict(event) for event in result.curve])


def read_curve(trial: FrozenTrial) -> list[EvalEvent]:
    """A completed trial's learning curve (empty for the others: hpo.store.curves has theirs)."""
    return [EvalEvent(**point) for point in trial.user_attrs.get(CURVE, [])]


def retried_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of failed trials queued again (their worker died, or Ctrl-C stopped it)."""
    return {n for t in trials for n in optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(t)}
