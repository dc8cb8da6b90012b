"""Bad config input is refused whole before anything exists: exit 2, one `error:` line that
names the value as the user writes it and the fix, and no database (issue #26, kinds 1, 5,
8 and 9). Each case is a real `hpo run` process in a folder of its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from study_helpers import assert_user_error, hpo, hpo_ok, tiny

# (kind, overrides on a tiny study, fragments of the error line)
CASES: list[tuple[str, list[str], tuple[str, ...]]] = [
    # 1: every value a trial can take is checked up front: choices, bounds, steps
    ("1-choice-type", ["search_space.n_head={choices: [2, x]}"], ("search_space.n_head.choices[1]='x'", "integer")),
    ("1-zero-step", ["+search_space.n_layer={low: 1, high: 3, step: 0}"], ("search_space.n_layer.step=0", "positive")),
    ("1-step-over-range", ["+search_space.n_layer={low: 1, high: 3, step: 5}"], ("step=5", "at most 2")),
    ("1-step-not-dividing", ["+search_space.dropout={low: 0.0, high: 0.25, step: 0.1}"], ("high=0.2",)),
    ("1-bad-bound", ["+search_space.n_layer={low: 0, high: 3}"], ("search_space.n_layer.low=0", "model.n_layer=0")),
    (
        "1-bad-branch",
        ["~search_space.lr", "+search_space.lr={n_head: {2: 1.0e-3, 4: {low: -1.0, high: 1.0}}}"],
        ("search_space.lr.n_head.4.low=-1.0", "optim.lr"),
    ),
    # 5: no float setting is NaN or infinite
    ("5-nan-lr", ["optim.lr=nan"], ("optim.lr=nan", "finite")),
    ("5-inf-clip", ["optim.grad_clip=inf"], ("optim.grad_clip=inf", "finite")),
    # 8: non-ASCII text that cannot be read plainly says how to quote it
    ("8-sweep", ["study.name=été,x"], ("quote the value", "study.name=")),
    ("8-list", ["+search_space.pos_encoding={choices: [été]}"], ("quote the value", "choices: ['été']")),
    # 9: errors name the key as the user writes it
    ("9-fixed-entry", ["+search_space.pos_encoding=foo"], ("search_space.pos_encoding='foo'", "model.pos_encoding")),
    (
        "9-dotted-entry",
        ["+search_space.model.dropout={low: 0.0, high: 1.0}"],
        ("search_space.model.dropout.high=1.0", "model.dropout=1.0"),
    ),
]


@pytest.mark.parametrize(("kind", "overrides", "fragments"), CASES, ids=[case[0] for case in CASES])
def test_bad_config_creates_nothing(
    kind: str, overrides: list[str], fragments: tuple[str, ...], tmp_path: Path
) -> None:
    result = hpo("run", *tiny("bad", 1, *overrides), "--storage", f"sqlite:///{tmp_path}/x.db", cwd=tmp_path)
    line = assert_user_error(result, *fragments)
    assert "train.model" not in line and "train.optim" not in line
    assert list(tmp_path.iterdir()) == [], "a refused config must leave nothing behind"


@pytest.mark.parametrize("name", ["café", "naïve étude 2"])
def test_non_ascii_names_need_no_quotes(name: str, tmp_path: Path) -> None:
    """Hydra's grammar reads unquoted values as ASCII only; hpo quotes a plain one for it."""
    out = hpo_ok("config", *tiny(f"{name}"), cwd=tmp_path).stdout
    assert f"name: {name}" in out
    assert list(tmp_path.iterdir()) == []
