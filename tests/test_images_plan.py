"""Image recipes, content hashes and the pinned IR: pure functions, no engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from kfops.cli import cli
from kfops.images import plan, recipe
from kfops.images.engine import PipSettings
from kfops.images.registry import DOCKER_HUB, Reference
from kfops.pipeline import compiler
from kfops.project import config
from kfops.project.document import Mark
from kfops.project.model import ImageRecipe

PIPELINE = """\
from kfp import dsl


@dsl.component(base_image="python:3.11-slim", packages_to_install=["six==1.16.0"])
def first(n: int) -> int:
    return n


@dsl.component(base_image="python:3.11-slim", packages_to_install=["six==1.16.0"])
def second(n: int) -> int:
    return n + 1


@dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
def bare(n: int) -> int:
    return n


@dsl.container_component
def tool():
    return dsl.ContainerSpec(image="ghcr.io/acme/tool:1", command=["true"])


@dsl.pipeline(name="p")
def p(n: int = 1):
    a = first(n=n)
    second(n=a.output)
    bare(n=n)
    tool()
"""


def _project(tmp_path: Path, extra: str = "") -> Any:
    (tmp_path / "pipeline.py").write_text(PIPELINE)
    (tmp_path / "mlops.yaml").write_text(
        f"version: 1\nname: p\npipeline:\n  python: pipeline.py:p\n{extra}"
    )
    return config.load(tmp_path)


def test_components_become_implicit_recipes(tmp_path: Path) -> None:
    project = _project(tmp_path)
    compiled = compiler.compile_project(project)
    assignment = plan.assign(project, compiled.ir)
    # Same base and packages: one recipe, named after the first component.
    assert assignment.recipes["exec-first"] == assignment.recipes["exec-second"]
    assert assignment.recipes["exec-first"].packages == ("six==1.16.0",)
    # Named by content: it cannot clash with an images: key, nor move when a component
    # with the same base and packages is added before it.
    assert assignment.recipes["exec-first"].name.startswith("py-")
    assert assignment.recipes["exec-bare"].name != assignment.recipes["exec-first"].name
    assert assignment.recipes["exec-bare"].packages == ()
    # A container component keeps its own image (pinned by digest at compile --env).
    assert assignment.external == {"exec-tool": "ghcr.io/acme/tool:1"}


def test_mlops_image_wins_over_components(tmp_path: Path) -> None:
    (tmp_path / "req.txt").write_text("six==1.16.0\n")
    project = _project(
        tmp_path,
        "  image: default\n  steps:\n    second: {image: other}\n"
        "images:\n  default: {base: python:3.11-slim, requirements: req.txt}\n"
        "  other: {base: python:3.11-slim, packages: [pandas]}\n",
    )
    compiled = compiler.compile_project(project)
    assignment = plan.assign(project, compiled.ir)
    assert {label: r.name for label, r in assignment.recipes.items()} == {
        "exec-first": "default",
        "exec-second": "other",
        "exec-bare": "default",
    }


def test_pin_strips_exactly_the_preamble_kfp_would_not_write(tmp_path: Path) -> None:
    project = _project(tmp_path)
    compiled = compiler.compile_project(project)
    refs = {
        "exec-first": "r/p-first@sha256:" + "a" * 64,
        "exec-bare": "r/p-bare@sha256:" + "b" * 64,
    }
    pinned = yaml.safe_load(plan.pin(compiled.ir_text, refs, set(refs)))
    executors = pinned["deploymentSpec"]["executors"]
    original = compiled.ir["deploymentSpec"]["executors"]
    # What KFP itself writes with install_kfp_package=False and no packages: its
    # program, then this step's own code, unchanged.
    stripped = executors["exec-first"]["container"]["command"]
    assert stripped[:3] == original["exec-bare"]["container"]["command"][:3]
    assert stripped[3:] == original["exec-first"]["container"]["command"][6:]
    assert executors["exec-first"]["container"]["image"] == refs["exec-first"]
    # Untouched: the executor not in the map, and everything but image and command.
    assert executors["exec-second"] == original["exec-second"]
    assert (
        executors["exec-first"]["container"]["args"] == original["exec-first"]["container"]["args"]
    )
    assert pinned["root"] == compiled.ir["root"]
    assert (
        plan.pin(compiled.ir_text, {}, set()).split("\n", 1)[1]
        == compiled.ir_text.split("\n", 1)[1]
    )


def _recipe(tmp_path: Path, **fields: Any) -> ImageRecipe:
    return ImageRecipe(name="default", mark=Mark(1, 1), **fields)


def test_hash_covers_what_goes_in(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("six==1.16.0\n")
    inputs = recipe.Inputs("2.17.3", {"python:3.11-slim": "sha256:" + "1" * 64})
    base = _recipe(tmp_path, base="python:3.11-slim", requirements=req)
    first = recipe.spec_for(base, "r/p-default", inputs)
    assert first.ref == f"r/p-default:{first.content_hash[:32]}"
    assert "FROM python@sha256:" + "1" * 64 in first.dockerfile
    assert "--no-deps kfp==2.17.3" in first.dockerfile
    assert recipe.spec_for(base, "r/p-default", inputs).ref == first.ref  # stable
    moved = recipe.Inputs("2.17.3", {"python:3.11-slim": "sha256:" + "2" * 64})
    other_kfp = recipe.Inputs("2.17.4", inputs.base_digests)
    req.write_text("six==1.17.0\n")
    changed_requirements = recipe.spec_for(base, "r/p-default", inputs).ref
    req.write_text("six==1.16.0\n")
    refs = {
        recipe.spec_for(base, "r/p-default", moved).ref,
        recipe.spec_for(base, "r/p-default", other_kfp).ref,
        changed_requirements,
        recipe.spec_for(
            _recipe(tmp_path, base="python:3.11-slim", requirements=req, packages=("pandas",)),
            "r/p-default",
            inputs,
        ).ref,
    }
    assert len(refs) == 4 and first.ref not in refs


def test_dockerfile_hash_honours_dockerignore(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY . /app\n")
    (tmp_path / ".dockerignore").write_text("# comment\ndata/\n*.log\n!keep.log\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.csv").write_text("1")
    (tmp_path / "app.py").write_text("print(1)\n")
    (tmp_path / "x.log").write_text("noise")
    (tmp_path / "keep.log").write_text("kept")
    (tmp_path / ".kfops").mkdir()
    (tmp_path / ".kfops" / "run.json").write_text("{}")
    image = _recipe(tmp_path, dockerfile=tmp_path / "Dockerfile", context=tmp_path)
    files = [name for name, _ in recipe.context_digests(tmp_path, tmp_path / "Dockerfile")[0]]
    assert files == [".dockerignore", "Dockerfile", "app.py", "keep.log"]

    def ref() -> str:
        return recipe.spec_for(image, "r/p-default", recipe.Inputs("2.17.3")).ref

    before = ref()
    (tmp_path / "data" / "big.csv").write_text("2")
    (tmp_path / "x.log").write_text("more noise")
    (tmp_path / ".kfops" / "run.json").write_text('{"a": 1}')
    assert ref() == before
    (tmp_path / "keep.log").write_text("changed")
    assert ref() != before
    with_args = _recipe(
        tmp_path, dockerfile=tmp_path / "Dockerfile", context=tmp_path, build_args=(("A", "1"),)
    )
    assert recipe.spec_for(with_args, "r/p-default", recipe.Inputs("2.17.3")).ref != ref()


@pytest.mark.parametrize(
    ("ref", "host", "repository", "reference"),
    [
        ("python:3.11-slim", DOCKER_HUB, "library/python", "3.11-slim"),
        ("acme/tool", DOCKER_HUB, "acme/tool", "latest"),
        ("ghcr.io/acme/iris-default:abc", "ghcr.io", "acme/iris-default", "abc"),
        ("127.0.0.1:5000/base/python:3.11", "127.0.0.1:5000", "base/python", "3.11"),
        ("localhost/x@sha256:" + "0" * 64, "localhost", "x", "sha256:" + "0" * 64),
    ],
)
def test_references(ref: str, host: str, repository: str, reference: str) -> None:
    assert Reference.parse(ref) == Reference(host, repository, reference)


def test_pinned_base_drops_the_tag() -> None:
    digest = "sha256:" + "f" * 64
    assert recipe.pinned_base("127.0.0.1:5000/base/python:3.11", digest) == (
        f"127.0.0.1:5000/base/python@{digest}"
    )
    assert recipe.pinned_base("python", digest) == f"python@{digest}"


def test_pip_settings_come_from_environment_and_pip_conf(tmp_path: Path) -> None:
    conf = tmp_path / "pip.conf"
    cert = tmp_path / "ca.pem"
    cert.write_text("CERT")
    conf.write_text(f"[global]\nindex-url = https://pypi.corp/simple\ncert = {cert}\n")
    settings = PipSettings.from_environment(
        {"PIP_CONFIG_FILE": str(conf), "PIP_EXTRA_INDEX_URL": "https://extra.corp/simple"}
    )
    assert "index-url = https://pypi.corp/simple" in settings.conf
    assert "extra-index-url = https://extra.corp/simple" in settings.conf
    assert settings.cert == cert


def test_compile_env_with_unknown_environment(tmp_path: Path, in_dir: Any) -> None:
    _project(tmp_path, "environments:\n  staging: {registry: 127.0.0.1:9/x}\n")
    in_dir(tmp_path)
    result = CliRunner().invoke(cli, ["compile", "--env", "stagign", "-o", "-"])
    assert result.exit_code == 2
    assert "error: --env stagign: mlops.yaml has no environment `stagign`" in result.stderr
    assert "did you mean `staging`?" in result.stderr
    assert result.stdout == ""


def _notebook_project(tmp_path: Path, image_tag: str, mlops_tail: str) -> Any:
    """A two-step notebook (base image python:3.12) whose first step has `image:TAG`."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kubeflow_notebook"] = {"pipeline_name": "nb", "base_image": "python:3.12"}
    nb.cells = [
        nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["step:load", f"image:{image_tag}"]}),
        nbformat.v4.new_code_cell("y = x + 1", metadata={"tags": ["step:use", "prev:load"]}),
    ]
    nbformat.write(nb, str(tmp_path / "train.ipynb"))
    (tmp_path / "mlops.yaml").write_text(
        "version: 1\nname: nb\npipeline:\n  notebook: train.ipynb\n" + mlops_tail
    )
    return config.load(tmp_path)


def test_notebook_image_tag_selects_an_image_by_name(tmp_path: Path) -> None:
    project = _notebook_project(
        tmp_path, "trainer", "images:\n  trainer: {base: python:3.11-slim, packages: [pandas]}\n"
    )
    assignment = plan.assign(project, compiler.compile_project(project).ir)
    assert assignment.recipes["exec-load"].name == "trainer"
    # Not a name under images: a plain base image, made into a recipe of its own.
    assert assignment.recipes["exec-use"].implicit
    assert assignment.recipes["exec-use"].base == "python:3.12"


def test_implicit_recipe_names_are_stable_and_never_clash(tmp_path: Path) -> None:
    project = _project(tmp_path, "images:\n  first: {base: python:3.11-slim, packages: [pandas]}\n")
    before = plan.assign(project, compiler.compile_project(project).ir)
    source = tmp_path / "pipeline.py"
    source.write_text(
        source.read_text()
        .replace(
            "@dsl.pipeline",
            '@dsl.component(base_image="python:3.11-slim", packages_to_install=["six==1.16.0"])\n'
            "def aaa(n: int) -> int:\n    return n\n\n\n@dsl.pipeline",
        )
        .replace("    tool()", "    tool()\n    aaa(n=n)")
    )
    after = plan.assign(project, compiler.compile_project(project).ir)
    assert after.recipes["exec-first"].name == before.recipes["exec-first"].name
    assert after.recipes["exec-aaa"] is not None
    assert after.recipes["exec-aaa"].name == after.recipes["exec-first"].name
    # The images: key `first` is a different image from component first's own recipe.
    assert all(r.name != "first" for r in after.recipes.values())


def test_notebook_step_tag_beats_pipeline_image(tmp_path: Path) -> None:
    project = _notebook_project(
        tmp_path,
        "gpu",
        "  image: default\nimages:\n  default: {base: python:3.11-slim}\n"
        "  gpu: {base: python:3.11-slim, packages: [torch]}\n",
    )
    assignment = plan.assign(project, compiler.compile_project(project).ir)
    assert assignment.recipes["exec-load"].name == "gpu"
    assert assignment.recipes["exec-use"].name == "default"


@pytest.mark.parametrize(
    ("packages", "expected"),
    [
        (["pandas; python_version>='3.8'", "six"], ("pandas; python_version>='3.8'", "six")),
        (["scikit-learn>=1.4,<2", "numpy"], ("scikit-learn>=1.4,<2", "numpy")),
    ],
)
def test_component_packages_are_read_back_as_written(
    tmp_path: Path, packages: list[str], expected: tuple[str, ...]
) -> None:
    (tmp_path / "pipeline.py").write_text(
        "from kfp import dsl\n\n\n"
        f"@dsl.component(base_image='python:3.11-slim', packages_to_install={packages!r},"
        " pip_index_urls=['https://pypi.corp/simple'])\n"
        "def one(n: int) -> int:\n    return n\n\n\n"
        "@dsl.pipeline(name='p')\ndef p(n: int = 1):\n    one(n=n)\n"
    )
    (tmp_path / "mlops.yaml").write_text(
        "version: 1\nname: p\npipeline:\n  python: pipeline.py:p\n"
    )
    ir = compiler.compile_project(config.load(tmp_path)).ir
    assert plan.executors(ir)["exec-one"].packages == expected


def test_context_hash_leaves_out_git_and_kfops_folders(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    for folder in (".git", "sub/.kfops", ".kfops"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "state").write_text("1")
    image = _recipe(tmp_path, dockerfile=tmp_path / "Dockerfile", context=tmp_path)
    first = recipe.spec_for(image, "r/p-default", recipe.Inputs("2.17.3"))
    assert any("`.git/`" in note for note in first.notes)
    assert any("`.kfops/`" in note for note in first.notes)
    for folder in (".git", "sub/.kfops", ".kfops"):
        (tmp_path / folder / "state").write_text("2")
    assert recipe.spec_for(image, "r/p-default", recipe.Inputs("2.17.3")).ref == first.ref
    (tmp_path / "Dockerfile").chmod(0o755)
    assert recipe.spec_for(image, "r/p-default", recipe.Inputs("2.17.3")).ref != first.ref
    # kfp's version reaches a Dockerfile image as a build argument, and its hash.
    other = recipe.spec_for(image, "r/p-default", recipe.Inputs("2.17.4"))
    assert ("KFOPS_KFP_VERSION", "2.17.4") in other.build_args
    assert other.ref != recipe.spec_for(image, "r/p-default", recipe.Inputs("2.17.3")).ref


def test_nested_requirements_are_copied_and_hashed(tmp_path: Path) -> None:
    (tmp_path / "req").mkdir()
    main = tmp_path / "req" / "requirements.txt"
    main.write_text("-r base.txt\n-c constraints/pins.txt  # pins\npandas\n")
    (tmp_path / "req" / "base.txt").write_text("six==1.16.0\n")
    (tmp_path / "req" / "constraints").mkdir()
    (tmp_path / "req" / "constraints" / "pins.txt").write_text("numpy<3\n")
    inputs = recipe.Inputs("2.17.3", {"python:3.11-slim": "sha256:" + "1" * 64})
    image = _recipe(tmp_path, base="python:3.11-slim", requirements=main)
    spec = recipe.spec_for(image, "r/p-default", inputs)
    assert [name for name, _ in spec.files] == [
        "kfops-requirements/base.txt",
        "kfops-requirements/constraints/pins.txt",
        "kfops-requirements/requirements.txt",
    ]
    assert "-r /kfops/requirements/requirements.txt" in spec.dockerfile
    assert set(spec.packages) == {"six==1.16.0", "numpy<3", "pandas"}
    (tmp_path / "req" / "base.txt").write_text("six==1.17.0\n")
    assert recipe.spec_for(image, "r/p-default", inputs).ref != spec.ref


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("-e .", "requirements.txt:2: `-e .` is a local path"),
        ("./wheels/mine.whl", "requirements.txt:2: `./wheels/mine.whl` is a local path"),
        ("-r ../outside.txt", "outside.txt is outside"),
    ],
)
def test_requirements_a_recipe_cannot_hold(tmp_path: Path, line: str, message: str) -> None:
    from kfops.errors import KfopsError

    (tmp_path / "req").mkdir()
    (tmp_path / "outside.txt").write_text("six\n")
    main = tmp_path / "req" / "requirements.txt"
    main.write_text(f"pandas\n{line}\n")
    inputs = recipe.Inputs("2.17.3", {"python:3.11-slim": "sha256:" + "1" * 64})
    with pytest.raises(KfopsError) as raised:
        recipe.spec_for(
            _recipe(tmp_path, base="python:3.11-slim", requirements=main), "r/x", inputs
        )
    assert message in raised.value.message


def test_build_for_an_environment_without_a_registry(tmp_path: Path, in_dir: Any) -> None:
    _project(tmp_path, "environments:\n  staging: {kfp: {host: 'http://127.0.0.1:9'}}\n")
    in_dir(tmp_path)
    result = CliRunner().invoke(cli, ["build", "--env", "staging"])
    assert result.exit_code == 2
    assert "error: environment `staging` has no `registry`" in result.stderr
    assert "under environments.staging (mlops.yaml:6)" in result.stderr
