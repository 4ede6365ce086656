"""(Re)create the invalid-notebook corpus in ./invalid: one .ipynb per case.

Run from anywhere: ``python tests/data/notebooks/make_invalid.py``; then
``pytest tests/test_notebook_corpus.py --regen-goldens`` and review the .expected diffs.
Each case is one entry below, so a reviewer reads the notebook as Python. Cases that
cannot be a notebook at all (bad JSON, wrong JSON, wrong encoding) are written as bytes.
Both tag generations appear: Kale 2.x (`step:`, `base_image`) and Kale 0.x/1.x
(`block:`, `docker_image`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent / "invalid"

# A cell is (tags, source); tags is a list of str, or None for a markdown cell.
CellSpec = tuple[list[str] | None, str]

IMPORTS: CellSpec = (["imports"], "import json\nimport math")
KALE2 = {"pipeline_name": "demo", "base_image": "python:3.11-slim"}
KALE1 = {"pipeline_name": "demo", "docker_image": "python:3.11-slim", "experiment": {"name": "x"}}


def notebook(cells: list[CellSpec], kale: dict[str, Any] | None = None) -> str:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["kubeflow_notebook"] = dict(KALE2 if kale is None else kale)
    for number, (tags, source) in enumerate(cells, start=1):
        cell = new_markdown_cell(source) if tags is None else new_code_cell(source)
        cell.id = f"cell-{number}"  # fixed ids: regenerating changes nothing
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    return nbformat.writes(nb) + "\n"


def raw_notebook(cells: Any, **top: Any) -> str:
    """A notebook-shaped JSON document, written as is (nbformat would refuse it)."""
    doc = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5, **top}
    return json.dumps(doc, indent=1) + "\n"


CASES: dict[str, str | bytes] = {
    # --- not a notebook at all -------------------------------------------------------
    "malformed-json": (
        '{\n "cells": [\n  {\n   "cell_type": "code",\n   "metadata": {"tags": ["step:a"]},\n'
        '   "source": "x = 1",\n  },\n ],\n "metadata": {},\n "nbformat": 4\n}\n'
    ),
    "not-json": "# a Python script saved as .ipynb\nimport math\nprint(math.pi)\n",
    "json-list": "[1, 2, 3]\n",
    "json-object-not-notebook": '{"a": 1}\n',
    "non-utf8": (
        b'{"cells": [{"cell_type": "code", "metadata": {"tags": ["step:a"]},'
        b' "source": "name = \'caf\xe9\'", "outputs": [], "execution_count": null}],'
        b' "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n'
    ),
    "cells-not-list": raw_notebook({"0": {"cell_type": "code", "source": "x = 1"}}),
    "nbformat-version-string": raw_notebook([], nbformat="4"),
    "old-format-broken": json.dumps({"nbformat": 3, "worksheets": "none", "metadata": {}}),
    # --- malformed or unknown tags ---------------------------------------------------
    "unknown-tag-stepp": notebook([IMPORTS, (["stepp:train"], "model = 1")]),
    "unknown-tag-no-close-match": notebook([IMPORTS, (["gpu"], "model = 1")]),
    "notebook-empty-name": notebook([IMPORTS, (["notebook:"], "")]),
    "step-uppercase": notebook([IMPORTS, (["step:Train"], "model = 1")]),
    "block-name-with-dash": notebook([IMPORTS, (["block:load-data"], "data = [1, 2]")], kale=KALE1),
    "limit-missing-value": notebook([IMPORTS, (["step:train", "limit:cpu"], "model = 1")]),
    "cache-maybe": notebook([IMPORTS, (["step:train", "cache:maybe"], "model = 1")]),
    "secret-only-name": notebook([IMPORTS, (["step:train", "secret:onlyname"], "model = 1")]),
    "prev-empty": notebook(
        [IMPORTS, (["step:load"], "data = [1]"), (["step:train", "prev:"], "model = data")]
    ),
    "tags-not-a-list": raw_notebook(
        [{"cell_type": "code", "metadata": {"tags": "step:train"}, "source": "model = 1"}]
    ),
    # --- tags in the wrong place -----------------------------------------------------
    "two-block-tags": notebook([IMPORTS, (["step:a", "notebook:b"], "x = 1")]),
    "step-and-block-tags": notebook([IMPORTS, (["block:a", "step:b"], "x = 1")], kale=KALE1),
    # an untagged cell continues the `imports` (or parameters) cell above it, so it
    # cannot hold step settings (Kale ignores them only on the tagged cell itself)
    "step-settings-on-imports": notebook(
        [
            (["imports"], "import math"),
            (["limit:memory:4Gi"], "import os"),
            (["step:train"], "x = math.pi"),
        ]
    ),
    "step-settings-on-parameters": notebook(
        [
            IMPORTS,
            (["pipeline-parameters"], "LR = 0.1"),
            (["prev:train"], "EPOCHS = 2"),
            (["step:train"], "x = LR * EPOCHS"),
        ]
    ),
    # --- the step graph --------------------------------------------------------------
    "prev-missing-step": notebook(
        [
            IMPORTS,
            (["step:train"], "model = 1"),
            (["step:evaluate", "prev:trian"], "score = model * 2"),
        ]
    ),
    "cycle-two": notebook(
        [
            IMPORTS,
            (["step:a", "prev:b"], "x = 1"),
            (["step:b", "prev:a"], "y = x"),
        ]
    ),
    "cycle-three-block": notebook(
        [
            IMPORTS,
            (["block:load", "prev:evaluate"], "data = [1, 2, 3]"),
            (["block:train", "prev:load"], "model = sum(data)"),
            (["block:evaluate", "prev:train"], "score = model / 2"),
        ],
        kale=KALE1,
    ),
    "prev-self": notebook([IMPORTS, (["step:train", "prev:train"], "model = 1")]),
    "step-only-comments": notebook(
        [
            IMPORTS,
            (["step:load"], "data = [1, 2]"),
            (["step:train", "prev:load"], "# train a model on data (not written yet)\n# model = fit(data)"),
        ]
    ),
    "name-from-non-upstream-step": notebook(
        [
            IMPORTS,
            (["step:load"], "data = [1, 2, 3]"),
            (["step:train"], "model = sum(data)"),
        ]
    ),
    "name-from-later-step-block": notebook(
        [
            IMPORTS,
            (["block:train"], "model = fit(data)"),
            (["block:load"], "data = [1, 2]\n\ndef fit(d):\n    return sum(d)"),
        ],
        kale=KALE1,
    ),
    "metric-undefined": notebook(
        [
            IMPORTS,
            (["step:train"], "model = 1\naccuracy = 0.9"),
            (["pipeline-metrics"], "print(accuracy)\nprint(f1_score)"),
        ]
    ),
    "steps-defaults-not-list": notebook(
        [IMPORTS, (["step:train"], "model = 1")],
        kale={**KALE2, "steps_defaults": "label:team:ml"},
    ),
    "steps-defaults-bad-tag": notebook(
        [IMPORTS, (["step:load"], "data = [1]"), (["step:train", "prev:load"], "model = data")],
        kale={**KALE2, "steps_defaults": ["limit:cpu", "label:team:ml"]},
    ),
    "steps-defaults-prev": notebook(
        [IMPORTS, (["step:load"], "data = [1]"), (["step:train"], "model = data")],
        kale={**KALE2, "steps_defaults": ["prev:load"]},
    ),
    "step-name-digit-start": notebook(
        [IMPORTS, (["block:1train"], "model = 1")],
        kale={"pipeline_name": "demo", "docker_image": "python:3.11", "experiment": "training"},
    ),
    "no-steps": notebook([IMPORTS, (["functions"], "def double(x):\n    return 2 * x")]),
    "empty-notebook": notebook([]),
    "notebook-subpipeline": notebook(
        [IMPORTS, (["step:load"], "data = [1]"), (["notebook:preprocess", "prev:load"], "")]
    ),
    # --- Python in the cells ---------------------------------------------------------
    "parameters-non-literal": notebook(
        [
            IMPORTS,
            (["pipeline-parameters"], "x = [1, 2, 3]\nN = len(x)"),
            (["step:train"], "model = N * 2"),
        ]
    ),
    "parameters-call-statement": notebook(
        [
            IMPORTS,
            (["pipeline-parameters"], 'LR = 0.1\nprint("learning rate", LR)\nEPOCHS = 3'),
            (["step:train"], "model = LR * EPOCHS"),
        ]
    ),
    "parameters-set-literal": notebook(
        [IMPORTS, (["pipeline-parameters"], "LABELS = {1, 2}"), (["step:train"], "m = LABELS")]
    ),
    "step-syntax-error": notebook(
        [
            IMPORTS,
            (["step:load"], "data = [1, 2, 3]"),
            (["step:train", "prev:load"], "total = 0\nfor x in data\n    total += x"),
        ]
    ),
    "step-syntax-error-second-cell": notebook(
        [
            IMPORTS,
            (["block:train"], "model = 1"),
            ([], "# still train\nscore = (model + 1"),
        ],
        kale=KALE1,
    ),
    "step-null-byte": notebook([IMPORTS, (["step:train"], "model = 1\nsep = '\x00'")]),
    "imports-syntax-error": notebook(
        [(["imports"], "import math\nfrom os import"), (["step:train"], "x = math.pi")]
    ),
    "metrics-syntax-error": notebook(
        [IMPORTS, (["step:train"], "acc = 1"), (["pipeline-metrics"], "print(acc")]
    ),
    # --- several problems at once ----------------------------------------------------
    "several-problems": notebook(
        [
            ([], "import math"),
            (["imports", "cache:disabled"], "import json"),
            (["pipeline-parameters"], "LR = 0.1\nN = int('3')"),
            (["block:load", "limit:memory"], "data = [1, 2]"),
            (["step:train", "prev:lod"], "model = sum(data) * LR"),
            (["stepp:evaluate", "prev:train"], "score = model"),
        ],
        kale={**KALE1, "steps_defaults": {"label": "team"}},
    ),
}


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for old in [*HERE.glob("*.ipynb"), *HERE.glob("*.expected")]:
        if old.stem not in CASES:
            old.unlink()  # a case that was removed or renamed
    for name, content in CASES.items():
        path = HERE / f"{name}.ipynb"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="\n")
    print(f"wrote {len(CASES)} notebooks to {HERE}")


if __name__ == "__main__":
    main()
