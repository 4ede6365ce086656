from kfp import dsl

THRESHOLD = {"a": 1}["b"]


@dsl.pipeline
def broken() -> None:
    pass
