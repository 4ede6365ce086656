"""CLI wiring: commands, formats and exit codes (the core is tested elsewhere)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kfops import __version__
from kfops.cli import cli
from tests.conftest import DATA, ROOT

INVALID = DATA / "mlops" / "invalid"
IRIS = ROOT / "pipelines" / "iris"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_help_lists_commands_and_exit_codes() -> None:
    code, out, _ = invoke("--help")
    assert code == 0
    for command in ("validate", "compile", "run", "init"):
        assert command in out
    assert "Exit codes: 0 ok, 1 invalid input or a failed step, 2 usage error" in out


def test_version() -> None:
    assert invoke("--version") == (0, f"kfops, version {__version__}\n", "")


def test_python_dash_m() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kfops", "validate", str(IRIS)], capture_output=True, text=True
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "valid\n")


def test_validate_valid_project_folder_and_file() -> None:
    assert invoke("validate", str(IRIS)) == (0, "", "valid\n")
    assert invoke("validate", str(IRIS / "mlops.yaml")) == (0, "", "valid\n")


def test_validate_exit_codes() -> None:
    assert invoke("validate", str(INVALID / "misspelt-top-key.yaml"))[0] == 1
    assert invoke("validate", "--format", "xml", str(IRIS))[0] == 2
    assert invoke("validate", "--no-such-option")[0] == 2
    code, _, err = invoke("validate", "/no/such/place")
    assert code == 2
    assert err == "error: /no/such/place: no such file or folder\n"


def test_validate_folder_without_mlops_yaml(tmp_path: Path) -> None:
    code, _, err = invoke("validate", str(tmp_path))
    assert code == 1
    assert err.startswith(f"error: no mlops.yaml in {tmp_path}\n  hint: write one with `kfops init")


def test_validate_json_format(in_dir: object) -> None:
    in_dir(INVALID)  # type: ignore[operator]
    code, out, _ = invoke("validate", "--format", "json", "misspelt-top-key.yaml")
    assert code == 1
    assert json.loads(out) == {
        "valid": False,
        "problems": [
            {
                "file": "misspelt-top-key.yaml",
                "line": 3,
                "column": 1,
                "message": "unknown key `pipline` in the top level",
                "hint": "did you mean `pipeline`?",
                "path": "pipline",
                "severity": "error",
            }
        ],
    }
    assert json.loads(invoke("validate", "--format", "json", str(IRIS))[1]) == {
        "valid": True,
        "problems": [],
    }


def test_validate_github_format(in_dir: object, tmp_path: Path) -> None:
    (tmp_path / "mlops.yaml").write_text("version: 1\nname: a,b\n")
    in_dir(tmp_path)  # type: ignore[operator]
    code, out, _ = invoke("validate", "--format", "github")
    assert code == 1
    assert out.splitlines() == [
        "::error file=mlops.yaml,line=1,col=1,title=kfops::missing required key `pipeline`"
        " in the top level%0Ahint: add `pipeline:`, e.g. `pipeline: {python:"
        " 'pipeline.py:training_pipeline', parameters: {n_estimators: 100}}`",
        '::error file=mlops.yaml,line=2,col=7,title=kfops::invalid `name`: "a,b" (at name)%0Ahint:'
        " use lowercase letters, digits and '-', starting and ending with a letter or digit"
        " (a DNS-1123 label)",
    ]


def test_compile_to_stdout_and_file(tmp_path: Path) -> None:
    code, out, _ = invoke("compile", str(IRIS), "-o", "-")
    assert code == 0
    assert out.startswith("# PIPELINE DEFINITION\n# Name: iris\n")
    target = tmp_path / "out" / "iris.yaml"
    code, _, err = invoke("compile", str(IRIS), "-o", str(target))
    assert code == 0
    assert target.read_text() == out
    assert err == f"compiled iris -> {target}\n"


def test_compile_invalid_project_reports_problems_and_exits_1() -> None:
    code, out, err = invoke("compile", str(INVALID / "misspelt-top-key.yaml"))
    assert code == 1
    assert out == ""
    assert "unknown key `pipline`" in err


def test_run_help_mentions_param_and_cache() -> None:
    code, out, _ = invoke("run", "--help")
    assert code == 0
    assert "--param NAME=VALUE" in out
    assert "--cache / --no-cache" in out


def test_init_writes_a_valid_project(tmp_path: Path, in_dir: object) -> None:
    (tmp_path / "pipeline.py").write_text((IRIS / "pipeline.py").read_text())
    in_dir(tmp_path)  # type: ignore[operator]
    code, _, err = invoke("init", "pipeline.py", "--name", "my-iris")
    assert code == 0
    assert err == "wrote mlops.yaml; check it with: kfops validate\n"
    text = (tmp_path / "mlops.yaml").read_text()
    assert text.startswith("# yaml-language-server: $schema=")
    schema_ref = text.splitlines()[0].split("=", 1)[1]
    assert schema_ref == ".kfops/mlops.schema.json"
    assert (tmp_path / schema_ref).read_bytes() == (
        ROOT / "schemas" / "mlops.schema.json"
    ).read_bytes()
    assert "name: my-iris" in text
    assert "  #   n_estimators: 100\n" in text
    assert (tmp_path / ".gitignore").read_text().endswith(".kfops/\n")
    assert invoke("validate") == (0, "", "valid\n")
    # a second init neither overwrites nor duplicates the ignore line
    assert invoke("init", "pipeline.py")[0] == 1
    assert invoke("init", "pipeline.py", "--force")[0] == 0
    assert (tmp_path / ".gitignore").read_text().count(".kfops/") == 1


def test_init_quotes_file_names_yaml_would_misread(tmp_path: Path, in_dir: object) -> None:
    (tmp_path / "#1 train v2.py").write_text((IRIS / "pipeline.py").read_text())
    in_dir(tmp_path)  # type: ignore[operator]
    assert invoke("init", "#1 train v2.py", "--name", "odd")[0] == 0
    assert "  python: '#1 train v2.py:iris_pipeline'\n" in (tmp_path / "mlops.yaml").read_text()
    assert invoke("validate") == (0, "", "valid\n")


@pytest.mark.parametrize(
    ("content", "args", "code", "message"),
    [
        ("x = 1\n", [], 1, "defines no @dsl.pipeline function"),
        ("def f(:\n", [], 1, "pipeline.py:1:7: Python syntax: invalid syntax"),
        (
            "from kfp import dsl\n@dsl.pipeline\ndef a(): ...\n@dsl.pipeline\ndef b(): ...\n",
            [],
            2,
            "defines several pipelines: a, b",
        ),
        ("from kfp import dsl\n@dsl.pipeline\ndef a(): ...\n", ["--function", "b"], 2, "no @dsl"),
        ("from kfp import dsl\n@dsl.pipeline\ndef a(): ...\n", ["--name", "Bad_Name"], 2, "DNS"),
    ],
)
def test_init_errors(
    tmp_path: Path, in_dir: object, content: str, args: list[str], code: int, message: str
) -> None:
    (tmp_path / "pipeline.py").write_text(content)
    in_dir(tmp_path)  # type: ignore[operator]
    got_code, _, err = invoke("init", "pipeline.py", *args)
    assert got_code == code
    assert message in err
    assert not (tmp_path / "mlops.yaml").exists()


def test_unexpected_exception_is_exit_3(monkeypatch: pytest.MonkeyPatch) -> None:
    from kfops.project import config

    def boom(path: Path) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(config, "check", boom)
    code, _, err = invoke("validate", str(IRIS))
    assert code == 3
    assert err.startswith("kfops: unexpected error (a bug in kfops")
