"""A pipeline file with a Python syntax error on line 9."""

from kfp import dsl


@dsl.pipeline(name="iris")
def iris_pipeline(n_estimators: int = 100) -> None:
    if n_estimators > 10
        print("many trees")
