"""Typed configs: what a training run is given, how a study searches and stores, and the
Hydra composition of `study_configs/` into them. Free of torch, Optuna and SQL."""
