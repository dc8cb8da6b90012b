"""The trainer: a GPT, its data, the training loop and the processes a run spans.

`hpo.trainer.loop.train(RunSpec) -> TrialResult` is a plain function that knows
nothing of Optuna or of the database; hpo.trainer.launch runs it on N ranks in child
processes. This package imports nothing itself, so that importing one of its torch-free
modules (hpo.trainer.forkserver) costs nothing.
"""
