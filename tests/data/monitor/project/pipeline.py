"""A stand-in for pipelines/iris/pipeline.py with the same signature and task names.

The validate and compile tests need the shape of a pipeline, not its work; keeping it
here means the example can change without rewriting their goldens.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output


@dsl.component(base_image="python:3.11-slim")
def load_data(test_size: float, seed: int, train: Output[Dataset], test: Output[Dataset]):
    print(test_size, seed, train.path, test.path)


@dsl.component(base_image="python:3.11-slim")
def train_model(train: Input[Dataset], n_estimators: int, seed: int, model: Output[Model]):
    print(train.path, n_estimators, seed, model.path)


@dsl.component(base_image="python:3.11-slim")
def evaluate(test: Input[Dataset], model: Input[Model], metrics: Output[Metrics]) -> float:
    metrics.log_metric("accuracy", 1.0)
    return 1.0


@dsl.pipeline(name="iris", description="Train and evaluate an iris classifier")
def iris_pipeline(n_estimators: int = 100, test_size: float = 0.3, seed: int = 42) -> float:
    data = load_data(test_size=test_size, seed=seed)
    trained = train_model(train=data.outputs["train"], n_estimators=n_estimators, seed=seed)
    return evaluate(test=data.outputs["test"], model=trained.outputs["model"]).outputs["Output"]
