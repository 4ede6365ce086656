"""Property: no YAML document, however odd, makes validate raise; it reports or accepts."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kfops.errors import KfopsError
from kfops.project import config

KEYS = st.sampled_from(
    [
        "version",
        "name",
        "description",
        "pipeline",
        "python",
        "parameters",
        "steps",
        "train",
        "resources",
        "cpu",
        "memory",
        "gpu",
        "retries",
        "cache",
        "env",
        "<<",
        "on",
        "",
        "x",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["pipeline.py:iris_pipeline", "1", "yes", "500m", "4Gi", "a:b", "-"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(KEYS | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)
DOCUMENTS = st.dictionaries(KEYS, VALUES, max_size=6)


def _check(tmp_path: Path, text: str) -> None:
    path = tmp_path / "mlops.yaml"
    path.write_text(text, encoding="utf-8")
    (tmp_path / "pipeline.py").write_text(
        "from kfp import dsl\n@dsl.pipeline\ndef iris_pipeline(n: int = 1): ...\n"
    )
    try:
        project, problems = config.check(path)
    except KfopsError:
        return
    assert (project is None) == any(p.severity == "error" for p in problems)
    for problem in problems:
        assert problem.line >= 0 and problem.column >= 0
        assert problem.message


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(DOCUMENTS)
def test_structured_documents_never_raise(tmp_path: Path, data: dict[str, object]) -> None:
    _check(tmp_path, yaml.safe_dump(data, allow_unicode=True))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#\n\t ,?%@`\\<1")), max_size=80))
def test_arbitrary_text_never_raises(tmp_path: Path, text: str) -> None:
    _check(tmp_path, text)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=200))
def test_any_unicode_never_raises(tmp_path: Path, text: str) -> None:
    _check(tmp_path, text)
