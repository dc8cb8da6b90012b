"""The Python API: `import hpo` is cheap, exposes hpo.api's surface, and the README's
example runs exactly as printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import hpo
import hpo.api

README = Path(__file__).resolve().parents[1] / "README.md"


def test_hpo_exposes_the_api_surface() -> None:
    """`hpo.__all__` is exactly what hpo.api defines in public, each with a docstring."""
    defined = {
        name
        for name, value in vars(hpo.api).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == "hpo.api" and callable(value)
    }
    assert defined == set(hpo.__all__) - {"StudyResults"}
    for name in hpo.__all__:
        assert getattr(hpo, name) is getattr(hpo.api, name)
        assert getattr(hpo.api, name).__doc__, f"hpo.{name} has no docstring"


def test_importing_hpo_imports_neither_torch_nor_optuna() -> None:
    code = "import sys, hpo; print(hpo.__version__); assert not {'torch', 'optuna'} & set(sys.modules), sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


def readme_python_example() -> str:
    """The README's Python example: the python block of its "From Python" section."""
    section = README.read_text().split("### From Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's From Python section has no python block"
    return match.group(1)


def test_readme_python_example_runs_as_printed(tmp_path: Path) -> None:
    env = {**os.environ, "HPO_CACHE_DIR": str(tmp_path / "cache"), "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, "-c", readme_python_example()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "True", result.stdout  # the most accurate trial, trained again, reproduced
    assert (tmp_path / "front.png").stat().st_size > 10_000
    assert (tmp_path / "notebook.db").is_file()
