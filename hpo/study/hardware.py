"""The hardware a study's throughput is measured on.

Tokens/s on one GPU model (or CPU) and on another are different quantities: a study whose
workers ran on both would rank hosts, not configurations. A study records the hardware of
the first worker that runs a trial (`hardware` study attribute, hpo.trainer.hardware's
`host_hardware`), and every trial records its own. With `study.hardware=same` (the default)
a worker on other hardware is refused before it claims a trial; with `mixed` it joins, and
`hpo show`, the notes and the report read the front per hardware.
"""

from __future__ import annotations

import optuna

from hpo.config.settings import HpoConfig
from hpo.errors import HpoError
from hpo.record.attrs import HARDWARE
from hpo.store.locks import study_lock
from hpo.store.storage import Storage
from hpo.trainer.hardware import host_hardware


def check_hardware(study: optuna.Study, storage: Storage, config: HpoConfig) -> str:
    """This host's hardware, recorded as the study's if it has none yet; HpoError if the study
    was measured on other hardware and does not allow a mix."""
    mine = host_hardware(config.training.train.device)
    with study_lock(storage, study.study_name):
        recorded = study.user_attrs.get(HARDWARE)
        if recorded is None:
            study.set_user_attr(HARDWARE, mine)
            return mine
    if recorded != mine and config.study.hardware == "same":
        raise HpoError(
            f"study {study.study_name!r} measures throughput on {recorded}, but this host has {mine}: "
            "its tokens/s would not compare; run this worker on the study's hardware, "
            "or make a new study with study.hardware=mixed"
        )
    return mine
