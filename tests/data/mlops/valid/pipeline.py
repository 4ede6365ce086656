"""Iris classifier: load data -> train a random forest -> evaluate on a held-out split.

A plain KFP v2 pipeline. kfops compiles it for Kubeflow Pipelines and runs it locally:

    kfops run pipelines/iris --param n_estimators=50
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

PACKAGES = ["scikit-learn>=1.4", "pandas>=2.0"]


@dsl.component(base_image="python:3.11-slim", packages_to_install=PACKAGES)
def load_data(test_size: float, seed: int, train: Output[Dataset], test: Output[Dataset]):
    """Split the iris data set (shipped with scikit-learn) into train and test CSV files."""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    frame = load_iris(as_frame=True).frame
    train_frame, test_frame = train_test_split(
        frame, test_size=test_size, random_state=seed, stratify=frame["target"]
    )
    train_frame.to_csv(train.path, index=False)
    test_frame.to_csv(test.path, index=False)
    train.metadata["rows"] = len(train_frame)
    test.metadata["rows"] = len(test_frame)
    print(f"train rows: {len(train_frame)}, test rows: {len(test_frame)}")


@dsl.component(base_image="python:3.11-slim", packages_to_install=PACKAGES)
def train_model(train: Input[Dataset], n_estimators: int, seed: int, model: Output[Model]):
    """Fit a random forest and save it with joblib."""
    import joblib
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier

    frame = pd.read_csv(train.path)
    classifier = RandomForestClassifier(n_estimators=n_estimators, random_state=seed)
    classifier.fit(frame.drop(columns="target"), frame["target"])
    joblib.dump(classifier, model.path)
    model.metadata["framework"] = "sklearn"
    print(f"trained a random forest with {n_estimators} trees")


@dsl.component(base_image="python:3.11-slim", packages_to_install=PACKAGES)
def evaluate(test: Input[Dataset], model: Input[Model], metrics: Output[Metrics]) -> float:
    """Score the model on the test split; log accuracy and macro F1."""
    import joblib
    import pandas as pd
    from sklearn.metrics import accuracy_score, f1_score

    frame = pd.read_csv(test.path)
    classifier = joblib.load(model.path)
    predicted = classifier.predict(frame.drop(columns="target"))
    accuracy = float(accuracy_score(frame["target"], predicted))
    metrics.log_metric("accuracy", round(accuracy, 4))
    f1_macro = float(f1_score(frame["target"], predicted, average="macro"))
    metrics.log_metric("f1_macro", round(f1_macro, 4))
    print(f"accuracy: {accuracy:.4f}")
    return accuracy


@dsl.pipeline(name="iris", description="Train and evaluate an iris classifier")
def iris_pipeline(n_estimators: int = 100, test_size: float = 0.3, seed: int = 42) -> float:
    data = load_data(test_size=test_size, seed=seed)
    trained = train_model(train=data.outputs["train"], n_estimators=n_estimators, seed=seed)
    scored = evaluate(test=data.outputs["test"], model=trained.outputs["model"])
    return scored.outputs["Output"]
