"""hpo: multi-objective hyperparameter optimization of GPT models (accuracy vs. throughput).

The Python API (hpo.api) is reachable from here: `hpo.run_study(...)`. It is imported on
first use, because it brings torch and Optuna (seconds), which `hpo --version`, `hpo show`
and a worker's start-up do without.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("hpo")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

__all__ = [
    "StudyResults",
    "compose_config",
    "create_study",
    "join_study",
    "load_results",
    "resume_study",
    "retrain_front",
    "run_study",
    "train",
    "trial_config",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("hpo.api"), name)
    raise AttributeError(f"module 'hpo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
