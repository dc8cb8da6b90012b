"""`--config-dir DIR` and `$HPO_CONFIG_DIR`: a user's own config groups and presets beside
study_configs/, through the real `hpo` command line.

The user folder holds a new `experiment` preset (a tiny study, the sizes of
study_helpers.tiny) and a new `data` option naming a text file outside the folder, so that
deleting the folder leaves the corpus: a study stores its composed config, and resuming it
needs no config folder.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import yaml
from study_helpers import assert_user_error, hpo, hpo_ok, load

NAME = "mine"

# The preset of a tiny study (study_helpers.TINY, on the user's data option).
PRESET = f"""\
# @package _global_
defaults:
  - override /data: {NAME}
model: {{n_layer: 1, n_head: 2, n_embd: 32, block_size: 64}}
train: {{batch_size: 16, evals: 2, sample_tokens: 16, threads: 1}}
budget: {{tokens: 20000}}
study: {{name: {NAME}, n_trials: 2}}
search_space:
  n_layer: 1
  n_head: {{choices: [2, 4]}}
  head_dim: 16
  lr: {{low: 1.0e-3, high: 1.0e-2, log: true}}
  batch_size: 16
  n_devices: 1
  block_size: 64
"""


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A small text corpus of about 60k characters, outside the config folder."""
    rng = random.Random(0)
    words = ["the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "log", "big", "red", "and", "then"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 10))) + "." for _ in range(2500)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def config_dir(tmp_path: Path, corpus: Path) -> Path:
    """A user config folder: experiment/mine.yaml and data/mine.yaml."""
    folder = tmp_path / "my_configs"
    (folder / "experiment").mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "experiment" / f"{NAME}.yaml").write_text(PRESET)
    (folder / "data" / f"{NAME}.yaml").write_text(f"source: {corpus}\ntokenizer: char\nval_tokens: 1024\n")
    return folder


def shown(result_stdout: str) -> dict:
    data = yaml.safe_load(result_stdout)
    assert isinstance(data, dict)
    return data


def test_config_shows_the_user_folder(config_dir: Path, corpus: Path) -> None:
    composed = shown(hpo_ok("config", "--config-dir", str(config_dir), f"experiment={NAME}").stdout)
    assert composed["data"]["source"] == str(corpus)
    assert composed["data"]["val_tokens"] == 1024
    assert (composed["study"]["name"], composed["budget"]["tokens"]) == (NAME, 20000)
    # the flag goes anywhere among the overrides; the packaged options are still there
    composed = shown(hpo_ok("config", f"data={NAME}", "--config-dir", str(config_dir), "optim=sgd").stdout)
    assert composed["data"]["source"] == str(corpus) and composed["optim"]["name"] == "sgd"


def test_an_option_named_like_a_packaged_one_is_the_users(config_dir: Path) -> None:
    (config_dir / "optim").mkdir()
    (config_dir / "optim" / "sgd.yaml").write_text("name: sgd\nlr: 0.5\nmomentum: 0.0\n")
    composed = shown(hpo_ok("config", "--config-dir", str(config_dir), "optim=sgd").stdout)
    assert composed["optim"] == {"name": "sgd", "lr": 0.5, "momentum": 0.0}
    assert shown(hpo_ok("config", "optim=sgd").stdout)["optim"]["lr"] != 0.5  # without the folder: hpo's


def test_the_environment_variable_is_used_without_the_flag(config_dir: Path, corpus: Path, tmp_path: Path) -> None:
    env = {"HPO_CONFIG_DIR": str(config_dir), "HPO_CACHE_DIR": str(tmp_path / "cache")}
    composed = shown(hpo_ok("config", f"experiment={NAME}", env=env).stdout)
    assert composed["data"]["source"] == str(corpus)
    trained = hpo_ok("train", "--quiet", f"experiment={NAME}", env=env)
    assert "val_accuracy" in trained.stdout
    # the flag wins over the variable
    missing = {"HPO_CONFIG_DIR": str(tmp_path / "nowhere")}
    assert shown(hpo_ok("config", "--config-dir", str(config_dir), f"experiment={NAME}", env=missing).stdout)


def test_a_study_runs_from_the_user_folder_and_resumes_without_it(
    config_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    env = {"HPO_CACHE_DIR": str(tmp_path / "cache")}
    hpo_ok("run", "--config-dir", str(config_dir), f"experiment={NAME}", "--storage", url, "--quiet", env=env)
    study = load(url, NAME)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    shutil.rmtree(config_dir)  # the study holds its composed config: no folder is needed
    resumed = hpo_ok("resume", NAME, "--storage", url, "--n-trials", "1", env=env)
    assert f"resuming {NAME}" in resumed.stdout
    assert [t.state.name for t in load(url, NAME).trials] == ["COMPLETE"] * 3
    assert corpus.is_file()


@pytest.mark.parametrize("how", ["flag", "variable", "a file"])
def test_a_missing_folder_is_a_one_line_error(how: str, tmp_path: Path, corpus: Path) -> None:
    nowhere = str(tmp_path / "nowhere")
    if how == "flag":  # `hpo run`: the error comes before any database exists
        db = tmp_path / "hpo.db"
        result = hpo("run", "--config-dir", nowhere, f"experiment={NAME}", "--storage", f"sqlite:///{db}")
        assert_user_error(result, f"--config-dir {nowhere}: no such folder")
        assert not db.exists()
    elif how == "variable":
        result = hpo("config", f"experiment={NAME}", env={"HPO_CONFIG_DIR": nowhere})
        assert_user_error(result, f"HPO_CONFIG_DIR={nowhere}: no such folder")
    else:
        assert_user_error(hpo("config", "--config-dir", str(corpus)), "--config-dir", f"{corpus} is not a folder")


def test_an_unknown_option_lists_both_folders(config_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "hpo.db"
    result = hpo("run", "--config-dir", str(config_dir), "experiment=nope", "--storage", f"sqlite:///{db}")
    line = assert_user_error(result, "experiment/nope", NAME, "smoke")
    assert "Config search path" not in line
    assert not db.exists()
    assert_user_error(hpo("config", "--config-dir", str(config_dir), "data=nope"), "data/nope", NAME, "builtin")
