"""Publishing a running study to optuna-dashboard: each finished trial's note, and the figures.

Workers publish as they go (`Publisher`, the `on_trial` callback that the study commands
give them); the gRPC proxy publishes for the workers behind it, which have no study lock
(hpo.browse.proxy). Either way it is only a view: a failure is a warning (`only_warn`),
never a failed worker or trial.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from collections.abc import Iterator

import optuna
from optuna.trial import FrozenTrial

from hpo.browse import notes
from hpo.store.curves import open_curves
from hpo.store.locks import study_lock

# The dashboard's figures are redrawn at most this often while a worker runs.
FIGURES_EVERY_S = 10.0


class Publisher:
    """Each finished trial's note and the study's figures for optuna-dashboard (hpo.browse.notes),
    written on a thread of their own; a worker's `on_trial` callback (hpo.study.worker).

    They take tenths of a second (plotly JSON, a dozen attribute writes, the study lock):
    in line, they would sit between one trial and the next; here they run while the next
    trial trains, and `close` waits for the last. Trials that finish while the figures are
    being drawn share the next drawing, and the figures are drawn at most every
    `figures_every` seconds (and once more at the end): a study of thousands of short trials
    would otherwise spend its database on redrawing them. The figures are drawn under the
    study lock, so that workers never interleave the chunks of one figure; with no lock (a
    gRPC proxy) they are left out. Only a view: whatever goes wrong is a warning, never a
    failed worker or trial.
    """

    def __init__(
        self, study: optuna.Study, storage: optuna.storages.BaseStorage, figures_every: float = FIGURES_EVERY_S
    ) -> None:
        self.study, self.storage, self.curves = study, storage, open_curves(storage)
        self.figures_every = figures_every
        self._drawn_at: float | None = None  # when the figures were last drawn (monotonic)
        self._undrawn: int | None = None  # the latest trial the figures have not shown yet
        self._queue: queue.SimpleQueue[FrozenTrial | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="hpo-publisher", daemon=True)
        self._thread.start()

    def __call__(self, trial: FrozenTrial) -> None:
        """Publish `trial` (soon, on the publisher's thread)."""
        self._queue.put(trial)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Publish what was submitted, then stop."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get())
            trials = [t for t in batch if t is not None]
            if trials:
                self._publish(trials)
            if None in batch:
                if self._undrawn is not None:
                    self._draw(self._undrawn)
                return

    def _publish(self, trials: list[FrozenTrial]) -> None:
        for trial in trials:
            with only_warn(f"dashboard note of trial {trial.number}"):
                notes.save_trial_note(self.study, trial, self.curves)
        self._undrawn = trials[-1].number
        if self._drawn_at is None or time.monotonic() - self._drawn_at >= self.figures_every:
            self._draw(self._undrawn)

    def _draw(self, latest: int) -> None:
        self._drawn_at, self._undrawn = time.monotonic(), None
        with (
            only_warn(f"dashboard figures after trial {latest}"),
            study_lock(self.storage, self.study.study_name) as exclusive,
        ):
            if exclusive:
                notes.save_figures(self.study, self.curves, latest)


@contextlib.contextmanager
def only_warn(what: str) -> Iterator[None]:
    """Turn a failure into a one-line warning: the study must go on without its views."""
    try:
        yield
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"warning: {what} not saved: {type(exc).__name__}: {detail}", file=sys.stderr, flush=True)
