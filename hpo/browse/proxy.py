"""`hpo proxy`: Optuna's gRPC storage proxy in front of a database, for studies with more
workers than the database has connections (hpo.store.grpc is the workers' side).

One thing only the database side can do: redraw a study's dashboard figures, which
takes the study lock (hpo.store.locks) so that two writers never interleave a figure's
chunks. Workers behind the proxy have no lock, so the proxy draws the figures of their
studies itself (`FigureDrawer`).
"""

from __future__ import annotations

import sys
import threading

import optuna
from optuna.trial import TrialState

from hpo.browse import notes
from hpo.browse.dashboard import bind
from hpo.browse.publisher import only_warn
from hpo.store.curves import AttrCurves
from hpo.store.grpc import SCHEME
from hpo.store.locks import study_lock

DEFAULT_PORT = 13000
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class FigureDrawer:
    """Redraws the dashboard figures of every study whose workers are behind the proxy.

    Every `every` seconds it looks for studies with newly finished trials that have
    proxy-side learning curves (a study with none has only workers on the database,
    which draw its figures themselves), and draws them under the study lock. The figures
    trail the trials by up to `every` seconds. Only a view: a failure is a warning.
    """

    def __init__(self, storage: optuna.storages.BaseStorage, database: optuna.storages.RDBStorage, every: float):
        self.storage, self.database, self.every = storage, database, every
        self._finished = self._count_finished()  # what is there at startup was drawn by its own workers
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hpo-figures", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop after the drawing in progress, if any."""
        self._stop.set()
        self._thread.join()

    def _count_finished(self) -> dict[str, int]:
        finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        return {
            name: len(
                self.storage.get_all_trials(self.storage.get_study_id_from_name(name), deepcopy=False, states=finished)
            )
            for name in optuna.get_all_study_names(self.storage)
        }

    def _run(self) -> None:
        curves = AttrCurves(self.storage)
        while not self._stop.wait(self.every):
            with only_warn("dashboard figures of proxied studies"):
                counts = self._count_finished()
                for name, count in counts.items():
                    if count == self._finished.get(name, 0):
                        continue
                    proxied = curves.curves(name)  # none: its workers are on the database and draw them
                    if not proxied:
                        continue
                    with only_warn(f"dashboard figures of study {name}"), study_lock(self.database, name):
                        notes.save_figures(optuna.load_study(study_name=name, storage=self.storage), proxied)
                self._finished = counts


def serve(storage: optuna.storages.RDBStorage, url: str, host: str, port: int, figures_every: float = 10.0) -> None:
    """Run Optuna's proxy for `storage` on host:port until interrupted, drawing the figures
    of proxied studies every `figures_every` seconds (0: never)."""
    # Bind first, as the dashboard does: a port out of range or in use, or a host that is not
    # this machine's, is then a one-line error and not one from deep inside gRPC.
    bind(host, port).server_close()
    if host not in LOCAL_HOSTS:
        print(
            f"warning: the proxy has no authentication or TLS: anyone who reaches {host}:{port} can read "
            "and change every study; keep it on a private network",
            file=sys.stderr,
        )
    print(f"gRPC storage proxy for {url} on {SCHEME}://{host}:{port}", flush=True)
    # get_storage puts Optuna's cache in front of an RDBStorage, as its proxy docs advise.
    cached = optuna.storages.get_storage(storage)
    drawer = FigureDrawer(cached, storage, figures_every) if figures_every > 0 else None
    try:
        optuna.storages.run_grpc_proxy_server(cached, host=host, port=port)
    finally:
        if drawer is not None:
            drawer.close()
