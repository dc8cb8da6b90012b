"""Every use hpo makes of Optuna's private API, each with why the public API does not suffice.

Checked against Optuna 5.1 (pyproject.toml allows 5.x). tests/store/test_optuna_internals.py
checks each name and signature below against the installed Optuna, so a 5.x release that
changes one fails there, by name, and not somewhere deep inside a study.
"""

from __future__ import annotations

import datetime
import gc
import json
from collections import defaultdict
from collections.abc import Callable, Collection, Container, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import optuna
import sqlalchemy
from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages._rdb import models
from optuna.study import Study
from optuna.study._constrained_optimization import _CONSTRAINTS_KEY, _is_constrained_optimization
from optuna.study._frozen import FrozenStudy
from optuna.study._multi_objective import _get_pareto_front_trials_by_trials
from optuna.study.study import _SYSTEM_ATTR_METRIC_NAMES
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "ARTIFACTS_ATTR_PREFIX",
    "BaseHeartbeat",
    "StudyView",
    "count_trials",
    "delete_trial_system_attr",
    "finished_trial",
    "frozen_metric_names",
    "light_trials",
    "light_trials_by_study",
    "pareto_front",
    "read_trials",
    "stale_trial_ids",
    "study_storage",
    "system_attr_values",
    "trial_id",
    "whole_trials",
]

# `BaseHeartbeat` (optuna.storages._heartbeat): the protocol through which Optuna's
# `fail_stale_trials` finds and fails a dead worker's trials. hpo.store.grpc implements it
# for the gRPC proxy client, which has none; there is no public base class to do so. Its
# abstract methods include the private `_get_stale_trial_ids`.

# `ARTIFACTS_ATTR_PREFIX` (optuna.artifacts._upload): `upload_artifact` records an artifact
# as the trial system attribute `artifacts:<artifact id>`. hpo reads a trial's kept models
# from the system attributes of trials it already holds (`get_all_artifact_meta` asks the
# storage again, once per trial) and deletes that attribute when it drops a model.


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """A trial's storage id. The storage API (system attributes, heartbeats, a trial's full
    record with its system attributes, which `optuna.Trial` does not show) is keyed by it,
    and neither trial class exposes it publicly."""
    return trial._trial_id


def stale_trial_ids(storage: BaseHeartbeat, study: Study) -> list[int]:
    """The ids of the study's RUNNING trials whose heartbeat is past the grace period: what
    `optuna.storages.fail_stale_trials` fails without a word. hpo needs them while they
    still run, to record why (`worker_lost`) before failing them itself."""
    return storage._get_stale_trial_ids(study._study_id)


def study_storage(study: Study) -> optuna.storages.BaseStorage:
    """The storage a study was loaded from, which `Study` does not expose publicly."""
    return study._storage


def read_trials(
    study: Study, deepcopy: bool, states: Container[TrialState] | None, use_cache: bool
) -> list[FrozenTrial]:
    """`Study._get_trials`: what samplers read a study's trials through (with `use_cache`,
    from the cache that Optuna renews as trials finish)."""
    return study._get_trials(deepcopy, states, use_cache)


TrialsReader = Callable[[Study, bool, "Container[TrialState] | None", bool], list[FrozenTrial]]


class StudyView(Study):
    """`study` as a sampler sees it when its trials are read through `reader`.

    Samplers read trials through the private `Study._get_trials`; overriding it is the one
    way to change what a sampler learns from without copying the study (hpo.search.samplers
    shows TPE each pruned trial as it was at its rung).
    """

    def __init__(self, study: Study, reader: TrialsReader) -> None:
        self.__dict__.update(study.__dict__)  # no storage round trip: the same study, read differently
        self._study, self._reader = study, reader

    def _get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        return self._reader(self._study, deepcopy, states, use_cache)


@dataclass(frozen=True)
class _TrialRef:
    """What `optuna_dashboard.save_note` reads of a trial: its storage, study and id."""

    storage: optuna.storages.BaseStorage
    study: Study
    _trial_id: int


def finished_trial(study: Study, trial: FrozenTrial) -> optuna.Trial:
    """A finished trial as `optuna_dashboard.save_note` takes it. `optuna.Trial(study, id)`
    would do too, but it calls the sampler's `before_trial`, which must not run again on a
    finished trial; save_note reads only `storage`, `study` and the private `_trial_id`."""
    return cast(optuna.Trial, _TrialRef(study_storage(study), study, trial_id(trial)))


_TRIAL_SYSTEM_ATTRIBUTES = sqlalchemy.table(
    "trial_system_attributes", sqlalchemy.column("trial_id"), sqlalchemy.column("key")
)


def delete_trial_system_attr(storage: optuna.storages.RDBStorage, trial_id: int, key: str) -> None:
    """Delete one system attribute of a trial, finished or not, with one SQL DELETE on
    Optuna's `trial_system_attributes` table; nothing happens if it is not there.

    Optuna has no API to delete an attribute, and refuses to write any attribute of a
    finished trial (`check_trial_is_updatable`), while a model leaves the Pareto front when
    its trial is long finished (hpo.study.models): its `artifacts:<id>` attribute must go with
    the artifact, or the dashboard lists a model that no longer exists. Processes that hold
    the trial in Optuna's cache of finished trials still see the attribute until they restart.
    """
    table = _TRIAL_SYSTEM_ATTRIBUTES
    with storage.engine.begin() as connection:
        connection.execute(sqlalchemy.delete(table).where(table.c.trial_id == trial_id).where(table.c.key == key))


# Reading a study at scale. `study.get_trials()` loads every trial whole (parameters, every
# attribute, JSON-decoded) into Optuna's cache: 7 s and 450 MB for 10,000 trials, where
# `hpo show` needs their states, values and a few attributes, and the parameters of the
# front alone. There is no public API that reads less, so these read Optuna's tables
# (`optuna.storages._rdb.models`) directly; behind the gRPC proxy, which has no SQL, they
# fall back to `get_trials`, which the proxy client caches and refreshes incrementally.


def _database(study: Study) -> optuna.storages.RDBStorage | None:
    """The SQL storage behind a study (which `load_study` wraps in `_CachedStorage`), or None
    behind the gRPC proxy."""
    storage = study_storage(study)
    if isinstance(storage, _CachedStorage):
        storage = storage._backend
    return storage if isinstance(storage, optuna.storages.RDBStorage) else None


@contextmanager
def _acyclic() -> Iterator[None]:
    """The cyclic garbage collector paused while rows become trials. Trials, their dicts and
    the rows hold no cycles, so reference counting frees them all; the collector would
    otherwise walk every object made so far after each few hundred, a third of the time
    of reading 10,000 trials."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def light_trials(
    study: Study,
    user_keys: Collection[str] = (),
    system_keys: Collection[str] = (),
    times: bool = True,
) -> list[FrozenTrial]:
    """The study's trials in number order, each with its state, values, times (unless
    `times` is off: parsing them is a sixth of the cost), constraints and only the named
    attributes: no parameters, no other attribute. Callers that need trials whole read
    them with `whole_trials`.

    Four indexed queries, however many attributes a trial holds; behind the gRPC proxy,
    the trials whole.
    """
    database = _database(study)
    if database is None:
        return study.get_trials(deepcopy=False)
    trials = models.TrialModel.__table__
    by_study = _light(database, trials.c.study_id == study._study_id, user_keys, system_keys, times)
    return by_study.get(study._study_id, [])


def light_trials_by_study(
    storage: optuna.storages.BaseStorage, user_keys: Collection[str] = ()
) -> dict[str, list[FrozenTrial]]:
    """`light_trials` of every study in the database, by study name, read at once: `hpo
    studies` on 200 studies costs five queries, not 200 loads of a study and 800 queries."""
    backend = storage._backend if isinstance(storage, _CachedStorage) else storage
    if not isinstance(backend, optuna.storages.RDBStorage):
        return {s.study_name: storage.get_all_trials(s._study_id, deepcopy=False) for s in storage.get_all_studies()}
    studies = models.StudyModel.__table__
    with backend.engine.connect() as connection:
        names: dict[int, str] = dict(
            connection.execute(sqlalchemy.select(studies.c.study_id, studies.c.study_name)).all()
        )
    by_study = _light(backend, sqlalchemy.true(), user_keys, (), times=False)
    return {name: by_study.get(study_id, []) for study_id, name in names.items()}


def frozen_metric_names(study: FrozenStudy) -> list[str] | None:
    """`Study.metric_names` of a study read by `storage.get_all_studies()`, which holds them
    in a system attribute under a private key: a summary of 200 studies need not load each."""
    return study.system_attrs.get(_SYSTEM_ATTR_METRIC_NAMES)


@_acyclic()
def _light(
    database: optuna.storages.RDBStorage,
    chosen: sqlalchemy.ColumnElement[bool],
    user_keys: Collection[str],
    system_keys: Collection[str],
    times: bool,
) -> dict[int, list[FrozenTrial]]:
    """The light trials of the trials `chosen` (a condition on Optuna's trials table), by study id."""
    trials, values = models.TrialModel.__table__, models.TrialValueModel.__table__
    users, systems = models.TrialUserAttributeModel.__table__, models.TrialSystemAttributeModel.__table__
    constraint = sqlalchemy.or_(systems.c.key == _CONSTRAINTS_KEY, systems.c.key.like(_CONSTRAINTS_KEY + ":%"))
    with database.engine.connect() as connection:
        rows = connection.execute(
            sqlalchemy.select(
                trials.c.study_id,
                trials.c.trial_id,
                trials.c.number,
                trials.c.state,
                *((trials.c.datetime_start, trials.c.datetime_complete) if times else ()),
            )
            .where(chosen)
            .order_by(trials.c.study_id, trials.c.number)
        ).all()
        # The value type's name as stored: SQLAlchemy's mapping of it to the Enum triples the query's time.
        value_type = sqlalchemy.type_coerce(values.c.value_type, sqlalchemy.String)
        stored_values = connection.execute(
            sqlalchemy.select(values.c.trial_id, values.c.objective, values.c.value, value_type)
            .join(trials, values.c.trial_id == trials.c.trial_id)
            .where(chosen)
        ).all()
        user = _attrs(connection, users, chosen, users.c.key.in_(list(user_keys))) if user_keys else {}
        system = _attrs(connection, systems, chosen, sqlalchemy.or_(systems.c.key.in_(list(system_keys)), constraint))
    by_trial: dict[int, dict[int, float]] = defaultdict(dict)
    value_types, decode = models.TrialValueModel.TrialValueType, models.TrialValueModel.stored_repr_to_value
    for trial_id, objective, value, type_name in stored_values:  # decoded only if infinite: 16,000 calls cost 50 ms
        by_trial[trial_id][objective] = value if type_name == "FINITE" else decode(value, value_types[type_name])
    # Optuna shows stored times (naive UTC) as naive local times; one offset keeps their order.
    offset = datetime.datetime.now().astimezone().utcoffset() or datetime.timedelta()
    out: dict[int, list[FrozenTrial]] = defaultdict(list)
    for study_id, trial_id, number, state, *started_completed in rows:
        start, complete = started_completed if times else (None, None)
        objectives = by_trial.get(trial_id) if state == TrialState.COMPLETE else None
        out[study_id].append(
            FrozenTrial(
                number=number,
                state=state,
                value=None,
                values=[objectives[i] for i in sorted(objectives)] if objectives else None,
                datetime_start=None if start is None else start + offset,
                datetime_complete=None if complete is None else complete + offset,
                params={},
                distributions={},
                user_attrs=user.get(trial_id, {}),
                system_attrs=system.get(trial_id, {}),
                intermediate_values={},
                trial_id=trial_id,
            )
        )
    return out


def _attrs(
    connection: sqlalchemy.Connection,
    table: sqlalchemy.Table,
    in_study: sqlalchemy.ColumnElement[bool],
    chosen: sqlalchemy.ColumnElement[bool],
) -> dict[int, dict[str, Any]]:
    """{trial id: {key: value}} of the chosen attributes of the study's trials."""
    trials = models.TrialModel.__table__
    rows = connection.execute(
        sqlalchemy.select(table.c.trial_id, table.c.key, table.c.value_json)
        .join(trials, table.c.trial_id == trials.c.trial_id)
        .where(in_study, chosen)
    ).all()  # fetched at once: row by row costs as much as decoding them
    out: dict[int, dict[str, Any]] = defaultdict(dict)
    for trial_id, key, value_json in rows:
        out[trial_id][key] = _decode(value_json)
    return out


def _decode(text: str) -> Any:
    """`json.loads(text)`, with a short way for what most attributes hold (a number, a plain
    string), which takes a tenth of the time: a study's summary decodes tens of thousands."""
    first = text[:1]
    if first == '"' and "\\" not in text:
        return text[1:-1]
    if first.isdigit() or (first == "-" and text[1:2].isdigit()):
        return float(text) if "." in text or "e" in text or "E" in text else int(text)
    return json.loads(text)


def count_trials(
    study: Study,
    states: Collection[TrialState],
    *,
    numbers_not_in: Collection[int] = (),
    user_attr: tuple[str, Collection[Any]] | None = None,
) -> int:
    """How many of the study's trials are in `states`, leaving out the numbers given and, with
    `user_attr=(key, values)`, counting only those whose attribute `key` is one of `values`.

    One SQL COUNT, whatever the study's size: a claim of a trial slot counts under the study
    lock, where reading every trial (11 s at 10,000 trials, for a worker whose cache is cold)
    would hold up every other worker.
    """
    database = _database(study)
    if database is None:
        return sum(
            1
            for t in study.get_trials(deepcopy=False, states=tuple(states))
            if t.number not in numbers_not_in and (user_attr is None or t.user_attrs.get(user_attr[0]) in user_attr[1])
        )
    trials, users = models.TrialModel.__table__, models.TrialUserAttributeModel.__table__
    query = sqlalchemy.select(sqlalchemy.func.count()).select_from(trials)
    query = query.where(trials.c.study_id == study._study_id, trials.c.state.in_(list(states)))
    if numbers_not_in:
        query = query.where(trials.c.number.not_in(list(numbers_not_in)))
    if user_attr is not None:
        # A subquery for each trial, by the (trial_id, key) index: as an EXISTS, PostgreSQL
        # joins from the attribute side and scans every attribute of the database (18 ms at
        # 10,000 trials, where this takes 4).
        key, values = user_attr
        stored = sqlalchemy.select(users.c.value_json).where(users.c.trial_id == trials.c.trial_id, users.c.key == key)
        query = query.where(stored.scalar_subquery().in_([json.dumps(value) for value in values]))
    with database.engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def system_attr_values(study: Study, key: str) -> list[Any]:
    """The values of one system attribute over the study's trials that hold it (few do:
    the retries' `retry_history`, say), without reading the trials."""
    database = _database(study)
    if database is None:
        return [t.system_attrs[key] for t in study.get_trials(deepcopy=False) if key in t.system_attrs]
    trials, systems = models.TrialModel.__table__, models.TrialSystemAttributeModel.__table__
    query = (
        sqlalchemy.select(systems.c.value_json)
        .join(trials, systems.c.trial_id == trials.c.trial_id)
        .where(trials.c.study_id == study._study_id, systems.c.key == key)
    )
    with database.engine.connect() as connection:
        return [json.loads(value) for (value,) in connection.execute(query)]


# The largest trial id (the column is a 32-bit integer): given it as the id that all trials
# read besides the named ones lie above, `RDBStorage._get_trials` reads the named ones only.
_NO_LATER_TRIALS = 2**31 - 1


@_acyclic()
def whole_trials(study: Study, trial_ids: Collection[int]) -> list[FrozenTrial]:
    """These trials of the study, whole (parameters and every attribute), in id order: the
    front of a study read light, or an export's page of trials.

    `RDBStorage._get_trials` is what Optuna's cache reads trials through, with one query per
    table for the whole batch; given ids and an id above them all, it reads those ids only.
    """
    database = _database(study)
    if database is None:
        wanted = set(trial_ids)
        return [t for t in study.get_trials(deepcopy=False) if t._trial_id in wanted]
    return database._get_trials(study._study_id, None, set(trial_ids), _NO_LATER_TRIALS) if trial_ids else []


def pareto_front(trials: Sequence[FrozenTrial], directions: Sequence[optuna.study.StudyDirection]) -> list[FrozenTrial]:
    """`Study.best_trials` of these trials: the same front, by the same code, from the trials
    given (light ones will do: it reads states, values and constraints only), so that a
    front read without loading every trial whole is Optuna's front."""
    return _get_pareto_front_trials_by_trials(trials, directions, _is_constrained_optimization(trials))
