"""(Re)create the real-world-shaped notebook corpus in ./corpus: one .ipynb per case.

Each notebook is written here, by us, in a shape found in public Kale-tagged
notebooks (nothing is copied from them): the JupyterLab extension's metadata of the
Kale 0.x era (empty `docker_image`, `katib_metadata`, `experiment: {id, name}`,
`volume_access_mode`), `block:` tags with fan-out and fan-in, trailing empty and
`skip` cells, comment-only cells before the first tag, Kaggle-style magics, helper
functions defined in a step, PyCharm's metadata, Kale 2.x's `step:` tags.

Run ``python tests/data/notebooks/make_corpus.py``, then
``pytest tests/test_notebook_corpus.py --regen-goldens`` and review the diffs.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent / "corpus"

# A cell is (tags, source); tags is None for a markdown cell.
CellSpec = tuple[list[str] | None, str]

# What Kale's JupyterLab extension (0.x) writes into every notebook it touches.
EXTENSION_METADATA: dict[str, Any] = {
    "autosnapshot": False,
    "docker_image": "",
    "experiment": {"id": "new", "name": "corpus"},
    "experiment_name": "corpus",
    "katib_metadata": {
        "algorithm": {"algorithmName": "grid"},
        "maxFailedTrialCount": 3,
        "maxTrialCount": 12,
        "objective": {"objectiveMetricName": "", "type": "minimize"},
        "parallelTrialCount": 3,
        "parameters": [],
    },
    "katib_run": False,
    "pipeline_description": "",
    "pipeline_name": "",
    "snapshot_volumes": False,
    "steps_defaults": [],
    "volume_access_mode": "rwm",
    "volumes": [],
}


def notebook(cells: list[CellSpec], kale: dict[str, Any], **metadata: Any) -> str:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["kubeflow_notebook"] = kale
    nb.metadata.update(metadata)
    for number, (tags, source) in enumerate(cells, start=1):
        cell = new_markdown_cell(source) if tags is None else new_code_cell(source)
        cell.id = f"cell-{number}"
        cell.metadata["tags"] = tags or []
        nb.cells.append(cell)
    return nbformat.writes(nb) + "\n"


MODELS = ["decisiontree", "svm", "naivebayes", "logisticregression", "randomforest"]
ESTIMATORS = {
    "decisiontree": "DecisionTreeClassifier(random_state=0)",
    "svm": "SVC()",
    "naivebayes": "GaussianNB()",
    "logisticregression": "LogisticRegression(max_iter=500)",
    "randomforest": "RandomForestClassifier(n_estimators=20, random_state=0)",
}

CASES: dict[str, str] = {
    # The JupyterLab extension's shape: a comment-only cell first, an imports cell with
    # libraries this machine lacks, one block continued by an untagged cell, a `skip`
    # cell writing to a mounted volume, a trailing empty cell.
    "feature-store-export": notebook(
        [
            (None, "# Automobile features\n\n## Importing the libraries"),
            ([], "# conda install cudatoolkit\n#!pip install alibi"),
            (
                ["imports"],
                "import numpy as np\nimport pandas as pd\nimport warnings\n"
                "warnings.filterwarnings('ignore')\n\nfrom pyspark.sql import SparkSession\n"
                "from minio import Minio\nimport os\nimport pickle",
            ),
            (None, "#### User defined features"),
            (
                ["block:user_defined_features"],
                "path_dict = {'featurestore': 'automobile'}\n"
                "feature_dict = {'featureSET': ['make', 'fuel-type', 'price']}",
            ),
            (
                [],
                "path_dict = pd.DataFrame(list(path_dict.items()))\n"
                "feature_dict = pd.DataFrame(list(feature_dict.items()))",
            ),
            (["skip"], "path_dict.to_csv(r'/mnt/path_dict.csv', index=False)"),
            ([], ""),
        ],
        {**EXTENSION_METADATA, "pipeline_name": "manual-1", "pipeline_description": "manual-1"},
    ),
    # Kale's classic tutorial shape: load, preprocess, engineer features, five models in
    # parallel (fan-out), one results step (fan-in); old `block:` tags.
    "titanic-models": notebook(
        [
            (None, "# Titanic: which model predicts survival best?"),
            (
                ["imports"],
                "import numpy as np\nimport pandas as pd\n\n"
                "from sklearn.ensemble import RandomForestClassifier\n"
                "from sklearn.linear_model import LogisticRegression\n"
                "from sklearn.naive_bayes import GaussianNB\nfrom sklearn.svm import SVC\n"
                "from sklearn.tree import DecisionTreeClassifier",
            ),
            (["block:loaddata"], "train_df = pd.read_csv('data/titanic.csv')"),
            (
                ["block:datapreprocessing", "prev:loaddata"],
                "train_df['Age'] = train_df['Age'].fillna(train_df['Age'].median())\n"
                "train_df['Sex'] = (train_df['Sex'] == 'female').astype(int)",
            ),
            (
                ["block:featureengineering", "prev:datapreprocessing"],
                "train_df['Family'] = train_df['SibSp'] + train_df['Parch']\n"
                "X_train = train_df[['Pclass', 'Sex', 'Age', 'Family', 'Fare']].to_numpy()\n"
                "Y_train = train_df['Survived'].to_numpy()",
            ),
            *[
                (
                    [f"block:{model}", "prev:featureengineering"],
                    f"model = {ESTIMATORS[model]}\nmodel.fit(X_train, Y_train)\n"
                    f"acc_{model} = round(model.score(X_train, Y_train) * 100, 2)",
                )
                for model in MODELS
            ],
            (
                ["block:results", *[f"prev:{model}" for model in MODELS]],
                "results = pd.DataFrame({\n    'Model': "
                + repr(MODELS)
                + ",\n    'Score': ["
                + ", ".join(f"acc_{m}" for m in MODELS)
                + "]})\nresult_df = results.sort_values(by='Score', ascending=False)\n"
                "best_score = float(result_df['Score'].iloc[0])\nprint(result_df)",
            ),
            (["pipeline-metrics"], "best_score"),
        ],
        {**EXTENSION_METADATA, "pipeline_name": "titanic-ml", "docker_image": "python:3.11"},
    ),
    # Kale's base example in the 2.x form: parameters, a functions cell, `step:` tags,
    # metrics printed, one of them a parameter.
    "candies": notebook(
        [
            (["imports"], "import random"),
            (["pipeline-parameters"], "candies = 36\nseed = 7"),
            (
                ["functions"],
                "def get_handful(left):\n    if left == 0:\n        return 0\n"
                "    # each step is a process of its own: seed from what it knows\n"
                "    return random.Random(seed * 1000 + left).randint(1, min(left, 12))",
            ),
            (["step:sack"], "print(f'{candies} candies in the sack')"),
            (["step:kid1", "prev:sack"], "kid1 = get_handful(candies)"),
            (["step:kid2", "prev:kid1"], "kid2 = get_handful(candies - kid1)"),
            (["step:kid3", "prev:kid2"], "kid3 = get_handful(candies - kid1 - kid2)"),
            (
                ["step:share", "prev:kid3"],
                "left = candies - kid1 - kid2 - kid3\nprint('left in the sack:', left)",
            ),
            (["pipeline-metrics"], "print(left)\nprint(candies)"),
        ],
        {"pipeline_name": "candies", "experiment_name": "candies", "base_image": "python:3.11"},
    ),
    # What Kale 2.3 accepts that kfops used to reject: a nameless `step:` that goes on
    # with the step above, `prev:` beside `imports`, a step that only reads a metric.
    "kale-2-lenient": notebook(
        [
            (["imports", "prev:prepare"], "import statistics"),
            (["functions"], "threshold = 1.5"),
            (["step:prepare"], "values = [3.0, 1.0, 2.0]"),
            (["step:", "prev:prepare"], "values.sort()"),
            (
                ["step:summarise", "prev:prepare"],
                "median = statistics.median(values)\nprint(median > threshold)",
            ),
            (["pipeline-metrics"], "print(median)\nprint(threshold)"),
        ],
        {
            "pipeline_name": "lenient",
            "experiment_name": "lenient",
            "volume_access_mode": "rwo",
            "storage_class_name": "standard",
            "marshal_path": "/tmp/marshal",
        },
    ),
    # Helpers written in the step that first needs them, and a module imported there,
    # used again further down (Kale hands such functions over with dill).
    "helpers-in-steps": notebook(
        [
            (["imports"], "import numpy as np"),
            (
                ["block:load"],
                "import math\n\ndef normalise(v):\n    return (v - v.mean()) / spread(v)\n\n"
                "def spread(v):\n    return math.sqrt(float(np.var(v)))\n\n"
                "data = np.arange(10.0)",
            ),
            (["block:scale", "prev:load"], "scaled = normalise(data)\nprint(round(math.fsum(scaled), 6))"),
            (["block:check", "prev:scale"], "largest = float(normalise(scaled).max())"),
            (["pipeline-metrics"], "largest"),
        ],
        {"pipeline_name": "helpers", "docker_image": "python:3.11"},
    ),
    # A Kaggle-style notebook: magics, shell escapes, a display call, plotting in a
    # `skip` cell; PyCharm's metadata, with its own "cell_type" keys.
    "kaggle-magics": notebook(
        [
            (["skip"], "!pip install -q seaborn\n%matplotlib inline"),
            (["imports"], "%load_ext autoreload\n%autoreload 2\nimport pandas as pd"),
            (
                ["step:explore"],
                "%%time\nframe = pd.DataFrame({'x': range(6), 'y': [1, 4, 9, 16, 25, 36]})\n"
                "display(frame.head(2))\nfiles = !ls",
            ),
            (["step:fit", "prev:explore"], "slope = float((frame['y'].diff() / frame['x'].diff()).mean())"),
            (["skip"], "frame.plot(x='x', y='y')"),
            (["pipeline-metrics"], "slope"),
        ],
        {"pipeline_name": "kaggle", "base_image": "python:3.11"},
        pycharm={"stem_cell": {"cell_type": "raw", "metadata": {"collapsed": False}, "source": []}},
    ),
    # An XGBoost notebook that hands a DMatrix on (runs where xgboost is installed).
    "xgboost-dmatrix": notebook(
        [
            (["imports"], "import numpy as np\nimport xgboost as xgb"),
            (["pipeline-parameters"], "ROUNDS = 5"),
            (
                ["step:data"],
                "rng = np.random.default_rng(0)\nfeatures = rng.normal(size=(200, 3))\n"
                "labels = (features[:, 0] > 0).astype(float)\n"
                "dtrain = xgb.DMatrix(features, label=labels)",
            ),
            (
                ["step:train", "prev:data"],
                "booster = xgb.train({'max_depth': 2, 'objective': 'binary:logistic'}, dtrain,"
                " num_boost_round=ROUNDS)",
            ),
            (
                ["step:evaluate", "prev:train", "prev:data"],
                "predictions = booster.predict(dtrain) > 0.5\n"
                "accuracy = float((predictions == dtrain.get_label()).mean())",
            ),
            (["pipeline-metrics"], "print(accuracy)"),
        ],
        {"pipeline_name": "xgboost-dmatrix", "base_image": "python:3.11"},
    ),
}


def titanic_data() -> str:
    rng = random.Random(1912)
    rows = [["Survived", "Pclass", "Sex", "Age", "SibSp", "Parch", "Fare"]]
    for _ in range(120):
        pclass = rng.choice([1, 2, 3])
        sex = rng.choice(["male", "female"])
        age = "" if rng.random() < 0.15 else str(rng.randint(1, 70))
        survived = int((sex == "female") ^ (rng.random() < 0.2 + 0.1 * pclass))
        fare = round(rng.uniform(5, 100) / pclass, 2)
        rows.append([str(survived), str(pclass), sex, age, str(rng.randint(0, 3)), str(rng.randint(0, 2)), str(fare)])
    out: list[str] = []
    writer = csv.writer(_Lines(out), lineterminator="\n")
    writer.writerows(rows)
    return "".join(out)


class _Lines:
    def __init__(self, out: list[str]) -> None:
        self.out = out

    def write(self, text: str) -> None:
        self.out.append(text)


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for old in HERE.glob("*.ipynb"):
        if old.stem not in CASES:
            old.unlink()
    for name, content in CASES.items():
        (HERE / f"{name}.ipynb").write_text(content, encoding="utf-8", newline="\n")
    (HERE / "data").mkdir(exist_ok=True)
    (HERE / "data" / "titanic.csv").write_text(titanic_data(), encoding="utf-8")
    print(f"wrote {len(CASES)} notebooks to {HERE}")


if __name__ == "__main__":
    main()
