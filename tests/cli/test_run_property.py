"""`hpo run --create-only` over generated overrides: every one either creates its study or
is refused with one `error:` line (exit 2) before anything exists: no database, no folder
beside it, no lock file. Never a traceback, never a file left behind."""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpo.cli import main

# Keys a user plausibly gets wrong, from every group the run validates before creating a study.
KEYS = [
    "model.n_layer", "model.n_head", "model.n_embd", "model.pos_encoding", "model.dropout",
    "optim.lr", "optim.name", "optim.weight_decay", "train.batch_size", "train.n_devices", "train.device",
    "train.checkpoint", "budget.tokens", "data.source", "data.val_fraction", "study.name", "study.n_trials",
    "study.seed", "sampler.name", "pruner.name", "storage.heartbeat_interval", "storage.keep_models",
    "resources.devices", "resources.memory_limit_gb", "search_space.n_layer", "search_space.lr",
]  # fmt: skip
VALUES = st.one_of(
    st.integers(-2, 9),
    st.sampled_from([0, 2**40, 1e-3, 0.5, -0.0, math.nan, math.inf, True, None]),
    st.sampled_from(["café", "cuda", "nope", "/proc/x/y.pt", "[1, 2]", "[7]", "{low: 0, high: 3}"]),
    st.sampled_from(["{choices: [2, x]}", "{low: 1e-3, high: 1e-2, step: 0}", "{low: 2, high: 1}", "auto"]),
)


def _render(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf"
    return str(value)


@settings(max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=2))
def test_run_creates_its_study_or_nothing(pairs: list[tuple[str, Any]]) -> None:
    overrides = [f"{key}={_render(value)}" for key, value in pairs]
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/hpo.db"
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["run", "--create-only", "--storage", url, "experiment=tiny", *overrides])
        left = sorted(os.listdir(folder))
        if code == 0:
            assert "hpo.db" in left and not [name for name in left if name.endswith(".lock")], left
            return
        assert code == 2, (overrides, err.getvalue())
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (overrides, err.getvalue())
        assert left == [], (overrides, left)  # refused before anything existed
        assert not Path(folder, "hpo.db").exists()
