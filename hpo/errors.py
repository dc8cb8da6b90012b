"""The two kinds of failure that hpo tells apart, and how a stop says what stopped it.

A `HpoError` is a user mistake (a bad config value, a missing file, a bad URL): the CLI
prints its message as one `error:` line and exits with status 2, never a traceback.
Everything else is a bug or a crash and keeps its traceback.
"""

from __future__ import annotations

# A SIGTERM stops an hpo command as Ctrl-C does, with a KeyboardInterrupt, and this is its
# argument: the stopped trial's message names it, and `hpo run --n-workers K` passes the
# signal on to its helper workers (a terminal's Ctrl-C reaches them with its process group).
TERMINATED = "SIGTERM"


class HpoError(Exception):
    """A user mistake; the message names the bad value and how to fix it."""


class DivergedError(HpoError):
    """The training loss became NaN or infinite; stops the run at once.

    A user error because it is a property of the chosen configuration (usually the
    learning rate), not a bug: a study records the trial as failed and goes on.
    """

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"training diverged at step {step} (loss {loss}); lower optim.lr or set optim.grad_clip")
        self.step = step
        self.loss = loss

    def __reduce__(self) -> tuple[type, tuple[int, float]]:
        # Keeps the exception picklable across process boundaries (trial isolation).
        return (DivergedError, (self.step, self.loss))
