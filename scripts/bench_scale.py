"""Benchmark how hpo's costs grow with a study: 10, 1,000 and 10,000 trials, SQLite and PostgreSQL.

Each study is shaped like hpo's own: a real `hpo run` of one smoke trial gives the template
(its stored config, parameters, user attributes and learning curve), and the bench adds
N trials like it through Optuna's `add_trials`, with random parameters and objective values,
a tenth of them pruned at a rung, some infeasible, some failed, each with its curve rows in
hpo's curve table. Each size gets a database of its own, so `hpo studies` sees one study.

It then measures, each as a figure of its own:
    show        `hpo show NAME` (a fresh process: wall time, peak memory)
    studies     `hpo studies`
    export      `hpo export NAME --format json --output FILE`
    claim       one claim of a trial slot (hpo.study.worker.claim), median of 5 after a first
    bookkeeping one trial's record and dashboard note after it finishes, median of 3
    figures     one drawing of the dashboard figures (a worker redraws them at most every 10 s)
    report      `hpo report NAME --out DIR`
and `hpo studies` on a database of 200 studies of 50 trials. Every figure is printed next to
the 10-trial figure of the same run, so the growth shows without trusting the machine's speed.

    python scripts/bench_scale.py                        # both databases, 10 / 1,000 / 10,000
    python scripts/bench_scale.py --sizes 10 2000 --databases sqlite   # a quick look
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from hpo.browse import notes
from hpo.browse.publisher import FIGURES_EVERY_S
from hpo.record.attrs import BUDGET_KEPT, CONFIG, CONSTRAINT, MESSAGE, REASON, RUNG, TARGET, write_reason
from hpo.record.outcome import EvalEvent, Reason
from hpo.store.curves import CURVES, open_curves
from hpo.store.storage import open_storage
from hpo.study.worker import claim

# The throwaway PostgreSQL server of the tests (tests/localpg.py): test tooling, not part of hpo.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from localpg import PostgresServer, find_pg_bindir, start_server, stop_server

STUDY = "scale"
TEMPLATE = "template"
BATCH = 500  # trials per add_trials call


@dataclass(frozen=True)
class Figure:
    """One measurement: seconds, and the peak memory of the process that did it (MB), if one."""

    seconds: float
    peak_mb: float | None = None


# Runs a command and prints its exit status and peak memory (KB). A process's peak memory
# counts what it had before exec, so `hpo` is started from this small process, not from the
# bench, whose own memory it would otherwise report.
LAUNCHER = (
    "import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL); "
    "_, status, usage = os.wait4(p.pid, 0); print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)"
)


def hpo(*args: str, runs: int = 3) -> Figure:
    """Run `hpo ARGS` in a fresh process `runs` times: the median run's wall time and peak
    resident memory (one run of a second varies by a tenth on a 2-core machine)."""
    figures = []
    for _ in range(runs):
        start = time.perf_counter()
        launched = subprocess.run(
            [sys.executable, "-c", LAUNCHER, sys.executable, "-m", "hpo", *args], capture_output=True, text=True
        )
        seconds = time.perf_counter() - start
        code, peak_kb = (int(word) for word in launched.stdout.split())
        if code != 0:
            sys.exit(f"error: hpo {' '.join(args)} failed (exit {code})")
        figures.append(Figure(seconds, peak_kb / 1024))
    return sorted(figures, key=lambda figure: figure.seconds)[runs // 2]


def template_trial(folder: Path) -> tuple[optuna.Study, FrozenTrial, list[EvalEvent]]:
    """A real one-trial smoke study: the shape every generated trial copies."""
    url = f"sqlite:///{folder / 'template.db'}"
    subprocess.run(
        [sys.executable, "-m", "hpo", "run", "--quiet", "--storage", url, "experiment=smoke",
         f"study.name={TEMPLATE}", "study.n_trials=1", "budget.tokens=20000"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    storage = open_storage(url)
    study = optuna.load_study(study_name=TEMPLATE, storage=storage)
    trial = study.get_trials(states=(TrialState.COMPLETE,))[0]
    return study, trial, open_curves(storage).curve(TEMPLATE, trial.number)


def synthetic(template: FrozenTrial, curve: list[EvalEvent], number: int, rng: random.Random) -> FrozenTrial:
    """A trial like `template`: random parameters from its distributions and random values
    that trade accuracy for throughput; 10% pruned at a rung, 5% infeasible, 3% failed."""
    params = {name: dist.to_external_repr(_sample(dist, rng)) for name, dist in template.distributions.items()}
    speed = rng.uniform(0, 1)  # a mild trade-off: a front of tens of trials, as real studies have
    accuracy = 0.1 + 0.4 * (1 - 0.5 * speed) * rng.betavariate(2, 5)
    tokens_per_sec = 1e4 + 2e5 * speed
    user_attrs = {**template.user_attrs, "val_accuracy": accuracy, "tokens_per_sec": tokens_per_sec}
    roll = rng.random()
    constraint = 1.0 if 0.10 <= roll < 0.15 else 0.0
    state, values = TrialState.COMPLETE, [accuracy, tokens_per_sec]
    if roll < 0.10 or constraint:
        state, values = TrialState.PRUNED, None
        if constraint:
            user_attrs = {REASON: Reason.INFEASIBLE.value, MESSAGE: "needs more memory than the device has"}
        else:
            point = curve[len(curve) // 2]
            user_attrs = {
                **user_attrs,
                REASON: Reason.PRUNED.value,
                RUNG: {
                    "rung_tokens": point.tokens,
                    BUDGET_KEPT: template.user_attrs[CONFIG]["budget"]["tokens"],
                    **asdict(point),
                },
            }
    elif roll < 0.18:
        state, values = TrialState.FAIL, None
        user_attrs = {REASON: Reason.DIVERGED.value, MESSAGE: "the loss was NaN at step 12"}
    return optuna.trial.create_trial(
        state=state,
        values=values,
        params=params,
        distributions=template.distributions,
        user_attrs=user_attrs,
        system_attrs={f"constraints:{CONSTRAINT}": constraint},
    )


def _sample(dist: optuna.distributions.BaseDistribution, rng: random.Random) -> float:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return rng.randrange(len(dist.choices))
    assert isinstance(dist, optuna.distributions.IntDistribution | optuna.distributions.FloatDistribution)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return rng.randrange(dist.low, dist.high + 1, dist.step)
    return rng.uniform(dist.low, dist.high)


def build(url: str, name: str, n_trials: int, template: tuple[optuna.Study, FrozenTrial, list[EvalEvent]]) -> None:
    """A study `name` of `n_trials` synthetic trials, with the template study's attributes."""
    source, trial, curve = template
    storage = open_storage(url)
    if storage.engine.dialect.name == "sqlite":  # a commit per trial: without syncing each, minutes less
        sqlalchemy.event.listen(
            storage.engine, "connect", lambda connection, _: connection.execute("PRAGMA synchronous=OFF")
        )
        storage.engine.dispose()
    study = optuna.create_study(study_name=name, storage=storage, directions=source.directions)
    study.set_metric_names(source.metric_names)
    for key, value in source.user_attrs.items():
        study.set_user_attr(key, value)
    study.set_user_attr(TARGET, n_trials)
    rng = random.Random(n_trials)
    open_curves(storage)  # creates hpo's curve table
    for start in range(0, n_trials, BATCH):
        count = min(BATCH, n_trials - start)
        study.add_trials([synthetic(trial, curve, start + i, rng) for i in range(count)])
        rows = [
            {"study": name, "trial": number, **asdict(event)}
            for number in range(start, start + count)
            for event in curve
        ]
        with storage.engine.begin() as connection:
            connection.execute(sqlalchemy.insert(CURVES), rows)
    # Closed, as a finished study's workers leave it: SQLite folds its write-ahead log into the
    # file as its last connection closes. Left open, the first command measured read through
    # tens of megabytes of log, and paid for it.
    storage.engine.dispose()


def claim_seconds(url: str, name: str) -> Figure:
    """One claim of a trial slot in a worker that has claimed before (its caches warm)."""
    storage = open_storage(url)
    study = optuna.load_study(study_name=name, storage=storage)
    study.set_user_attr(TARGET, len(study.get_trials(deepcopy=False)) + 100)
    times = []
    for _ in range(6):
        start = time.perf_counter()
        trial = claim(study, storage, poll=1.0)
        times.append(time.perf_counter() - start)
        assert trial is not None
        write_reason(trial, Reason.SURPLUS, "a claim of the benchmark")
        study.tell(trial, state=TrialState.FAIL)
    return Figure(statistics.median(times[1:]))


def bookkeeping_seconds(url: str, name: str, template: FrozenTrial) -> tuple[Figure, Figure]:
    """A finished trial's bookkeeping as a worker does it: record its result and tell it,
    then its dashboard note (hpo.browse.publisher); and, apart, one drawing of the study's
    figures, which the publisher redraws at most every FIGURES_EVERY_S. Medians of 3."""
    storage = open_storage(url)
    study = optuna.load_study(study_name=name, storage=storage)
    curves = open_curves(storage)
    records, drawings = [], []
    for _ in range(3):
        trial = claim(study, storage, poll=1.0)
        assert trial is not None
        start = time.perf_counter()
        for key, value in template.user_attrs.items():
            trial.set_user_attr(key, value)
        trial.set_constraint(CONSTRAINT, 0.0)
        frozen = study.tell(trial, [template.user_attrs["val_accuracy"], template.user_attrs["tokens_per_sec"]])
        notes.save_trial_note(study, frozen, curves)
        drawn = time.perf_counter()
        notes.save_figures(study, curves, latest=frozen.number)
        records.append(drawn - start)
        drawings.append(time.perf_counter() - drawn)
    return Figure(statistics.median(records)), Figure(statistics.median(drawings))


@contextmanager
def databases(kinds: list[str], folder: Path) -> Iterator[Callable[[str, str], str]]:
    """A function from a kind and a database name to a new database's URL."""
    server: PostgresServer | None = None
    bindir = find_pg_bindir()
    if "postgresql" in kinds:
        if bindir is None:
            sys.exit("error: PostgreSQL is not installed; apt-get install -y postgresql, or --databases sqlite")
        server = start_server(bindir)  # in a folder of its own, which the postgres user owns
    try:

        def url(kind: str, name: str) -> str:
            if kind == "sqlite":
                return f"sqlite:///{folder / name}.db"
            assert server is not None
            server.admin(f"CREATE DATABASE {name}")
            return server.url(name)

        yield url
    finally:
        if server is not None and bindir is not None:
            stop_server(bindir, server.root)
            shutil.rmtree(server.root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10_000], help="trials per study")
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    sizes = sorted(args.sizes)
    with tempfile.TemporaryDirectory() as tmp, databases(args.databases, Path(tmp)) as url_of:
        folder = Path(tmp)
        template = template_trial(folder)
        for kind in args.databases:
            rows: dict[str, dict[int, Figure]] = {}
            for size in sizes:
                url = url_of(kind, f"size{size}")
                start = time.perf_counter()
                build(url, STUDY, size, template)
                print(f"[{kind}] built {size:,} trials in {time.perf_counter() - start:.1f} s", flush=True)
                out = folder / f"{kind}-{size}"
                rows.setdefault("show", {})[size] = hpo("show", STUDY, "--storage", url)
                rows.setdefault("studies", {})[size] = hpo("studies", "--storage", url)
                rows.setdefault("export json", {})[size] = hpo(
                    "export", STUDY, "--storage", url, "--format", "json", "--output", f"{out}.json"
                )
                rows.setdefault("report", {})[size] = hpo("report", STUDY, "--storage", url, "--out", str(out))
                rows.setdefault("claim", {})[size] = claim_seconds(url, STUDY)
                record, drawing = bookkeeping_seconds(url, STUDY, template[1])
                rows.setdefault("bookkeeping", {})[size] = record
                rows.setdefault(f"figures (<= 1/{FIGURES_EVERY_S:g} s)", {})[size] = drawing
            many = url_of(kind, "many")
            for i in range(200):
                build(many, f"{STUDY}-{i:03d}", 50, template)
            rows["studies, 200 x 50"] = {sizes[-1]: hpo("studies", "--storage", many)}
            print_table(kind, sizes, rows)


def print_table(kind: str, sizes: list[int], rows: dict[str, dict[int, Figure]]) -> None:
    """Each figure at each size, and the largest size's as a multiple of the smallest's."""
    first, last = sizes[0], sizes[-1]
    print(f"\n{kind}: wall time (peak memory of the process), by trials in the study")
    print(f"{'':20}" + "".join(f"{size:>22,}" for size in sizes) + f"{f'{last:,} / {first:,}':>16}")
    for name, figures in rows.items():
        cells = "".join(f"{_cell(figures[size]) if size in figures else '':>22}" for size in sizes)
        ratio = figures[last].seconds / figures[first].seconds if first in figures and last in figures else None
        print(f"{name:20}{cells}{f'{ratio:.1f}x' if ratio else '':>16}")


def _cell(figure: Figure) -> str:
    time_text = f"{figure.seconds * 1000:.0f} ms" if figure.seconds < 1 else f"{figure.seconds:.2f} s"
    return time_text + (f" ({figure.peak_mb:.0f} MB)" if figure.peak_mb is not None else "")


if __name__ == "__main__":
    main()
