"""The schema is the public contract: valid 2020-12, documented, and shipped in the wheel."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from kfops.project import schema
from tests.conftest import ROOT

SOURCE = ROOT / "schemas" / "mlops.schema.json"


def _properties(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every property definition in the schema, with its path."""
    found = []
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            found.append((f"{path}.{name}", sub))
        for key, sub in node.items():
            found += _properties(sub, f"{path}/{key}" if key != "properties" else path)
    elif isinstance(node, list):
        for item in node:
            found += _properties(item, path)
    return found


def test_schema_is_valid_2020_12() -> None:
    loaded = json.loads(SOURCE.read_text())
    assert loaded["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(loaded)


def test_every_property_has_a_description_and_an_example() -> None:
    loaded = json.loads(SOURCE.read_text())
    props = _properties(loaded)
    assert len(props) >= 14
    for path, sub in props:
        assert sub.get("description"), f"{path} has no description"
        assert sub.get("examples"), f"{path} has no examples"
        for example in sub["examples"]:
            errors = list(
                Draft202012Validator({**sub, "$defs": loaded["$defs"]}).iter_errors(example)
            )
            assert not errors, f"{path}: example {example!r} does not validate"


def test_unknown_keys_are_errors_everywhere() -> None:
    loaded = json.loads(SOURCE.read_text())

    def objects(node: Any) -> list[dict[str, Any]]:
        out = []
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                out.append(node)
            for sub in node.values():
                out += objects(sub)
        return out

    for obj in objects(loaded):
        assert obj.get("additionalProperties") is False, obj.get("description")


def test_runtime_reads_the_same_schema() -> None:
    assert schema.schema() == json.loads(SOURCE.read_text())


@pytest.mark.slow
def test_wheel_ships_the_same_schema(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("kfops-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "kfops/schemas/mlops.schema.json" in names
        assert archive.read("kfops/schemas/mlops.schema.json") == SOURCE.read_bytes()
        assert "kfops/py.typed" in names


def test_kfp_and_kserve_install_together() -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
    from importlib.metadata import version

    assert version("kfp").startswith("2.17.")
    assert version("kserve").startswith("0.21.")


def test_validate_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from kfops.cli import cli\n"
        f"r = CliRunner().invoke(cli, ['validate', {str(ROOT / 'pipelines' / 'iris')!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'kfp', 'kserve', 'kubernetes',"
        " 'rich', 'google'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "[]\n"
