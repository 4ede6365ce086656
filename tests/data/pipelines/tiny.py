"""Small pipelines for the tests: no extra packages, so each step starts fast."""

from kfp import dsl
from kfp.dsl import Metrics, Output


@dsl.component(base_image="python:3.11-slim")
def greet(name: str) -> str:
    import os

    greeting = os.environ.get("GREETING", "hello")
    print(f"{greeting}, {name}")
    return f"{greeting}, {name}"


@dsl.component(base_image="python:3.11-slim")
def flaky(counter: str) -> int:
    """Fails on its first attempt, succeeds on the second (the counter file remembers)."""
    from pathlib import Path

    path = Path(counter)
    attempts = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(attempts))
    if attempts < 2:
        raise RuntimeError(f"flaky failure on attempt {attempts}")
    return attempts


@dsl.component(base_image="python:3.11-slim")
def score(factor: float, flags: list, weights: dict, metrics: Output[Metrics]) -> float:
    value = factor * len(flags) + sum(weights.values())
    metrics.log_metric("score", value)
    return value


@dsl.component(base_image="python:3.11-slim")
def explode(message: str):
    print("about to fail")
    raise ValueError(message)


@dsl.pipeline
def hello(name: str = "world") -> str:
    return greet(name=name).output


@dsl.pipeline
def retrying(counter: str) -> int:
    return flaky(counter=counter).output


@dsl.pipeline
def typed(
    factor: float = 1.0, flags: list = [1, 2], weights: dict = {"a": 1.0}, enabled: bool = True
) -> float:
    return score(factor=factor, flags=flags, weights=weights).outputs["Output"]


@dsl.pipeline
def failing(message: str = "the data is bad") -> str:
    first = greet(name="before")
    explode(message=message).after(first)
    return first.output
