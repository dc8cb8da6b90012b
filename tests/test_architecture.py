"""The package's shape: its layers hold, no import cycle exists, and each layer runs without
what the layers above it bring (docs/architecture.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]


def test_the_import_contracts_hold() -> None:
    """pyproject.toml's import-linter contracts: the layers, and which layers stay free of
    torch, Optuna, Hydra or SQL. Imports inside functions count."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), and self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if not imported.startswith("hpo"):
                continue
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1 or module in graph.find_modules_directly_imported_by(module):
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module.startswith("hpo") and module not in index:
            visit(module)
    return found


def test_no_module_of_hpo_is_in_an_import_cycle() -> None:
    graph = grimp.build_graph("hpo", cache_dir=None)
    assert len(graph.modules) > 40  # every module was found, those in subpackages too
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    """The check above on a graph with a cycle hidden in a function-level import."""
    graph = grimp.ImportGraph()
    for module in ("hpo", "hpo.a", "hpo.b", "hpo.c"):
        graph.add_module(module)
    graph.add_import(importer="hpo.a", imported="hpo.b")
    graph.add_import(importer="hpo.b", imported="hpo.c")
    graph.add_import(importer="hpo.c", imported="hpo.a")
    assert _cycles(graph) == [["hpo.a", "hpo.b", "hpo.c"]]


def _without(blocked: list[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter where importing any of `blocked` fails."""
    block = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    return subprocess.run([sys.executable, "-c", block + code], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_the_trainer_trains_without_optuna_hydra_or_sql() -> None:
    result = _without(
        ["optuna", "hydra", "omegaconf", "sqlalchemy"],
        """
from hpo.config.training import BudgetConfig, DataConfig, GPTConfig, TrainSettings, RunSpec
from hpo.trainer.loop import train
config = RunSpec(
    model=GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=32),
    data=DataConfig(val_tokens=256),
    train=TrainSettings(batch_size=8, evals=1, sample_tokens=4, threads=1),
    budget=BudgetConfig(tokens=2048),
)
result = train(config)
print("trained", result.steps, "steps")
""",
    )
    assert result.returncode == 0, result.stderr
    assert "trained 8 steps" in result.stdout


def test_browsing_a_study_never_imports_torch(sqlite_url: str) -> None:
    """`hpo studies`, `show` and `export` on a real (empty) database, with torch unimportable."""
    result = _without(
        ["torch"],
        f"""
import optuna
from hpo.cli import main
optuna.create_study(study_name="empty", storage={sqlite_url!r})
for command in (["studies"], ["show", "empty"], ["export", "empty", "--format", "json"]):
    assert main([*command, "--storage", {sqlite_url!r}]) == 0, command
""",
    )
    assert result.returncode == 0, result.stderr
    assert "empty" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "model.depth=3"], "unknown config key model.depth"),
        (["run", "search_space.lr={low: 0.1, high: 0.01}"], "search_space.lr"),
        (["run", "--n-workers", "0"], "--n-workers=0"),
        (["resume", "mine", "--timeout", "-1"], "--timeout=-1"),
    ],
    ids=["config-key", "search-space", "flag", "resume-flag"],
)
def test_a_mistake_is_refused_before_torch_is_imported(args: list[str], fragment: str) -> None:
    """A study command checks its flags and config before it imports torch or starts the
    forkserver: a mistake is an error line in half a second, not after seconds of imports."""
    result = _without(["torch"], f"import sys\nfrom hpo.cli import main\nsys.exit(main({args!r}))")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_every_subpackage_ships_in_the_wheel() -> None:
    """pyproject.toml lists its packages by hand (study_configs/ is mapped into the wheel):
    a subpackage missing there would be missing from `pip install .`."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(path.parent.relative_to(REPO).parts) for path in (REPO / "hpo").rglob("__init__.py")}
    assert found <= listed
