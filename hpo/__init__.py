"""hpo: multi-objective hyperparameter optimization of GPT models (accuracy vs. throughput)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hpo")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
