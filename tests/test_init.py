"""`kfops init` on a KFP pipeline file: the project's name."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from kfops.cli import cli

PIPELINE = """from kfp import dsl


@dsl.component
def hello() -> str:
    return "hi"


@dsl.pipeline({args})
def my_pipeline():
    hello()
"""


def _init(tmp_path: Path, args: str, *options: str) -> str:
    folder = tmp_path / "Some Folder"
    folder.mkdir()
    (folder / "pipeline.py").write_text(PIPELINE.format(args=args))
    result = CliRunner().invoke(cli, ["init", str(folder / "pipeline.py"), *options])
    assert result.exit_code == 0, result.output
    return (folder / "mlops.yaml").read_text()


def test_init_names_the_project_after_the_pipelines_name(tmp_path: Path) -> None:
    text = _init(tmp_path, 'name="Churn Model", description="d"')
    assert "\nname: churn-model  #" in text


def test_init_without_a_pipeline_name_uses_the_folder(tmp_path: Path) -> None:
    assert "\nname: some-folder  #" in _init(tmp_path, "")


def test_init_name_option_wins(tmp_path: Path) -> None:
    assert "\nname: mine  #" in _init(tmp_path, 'name="churn"', "--name", "mine")
