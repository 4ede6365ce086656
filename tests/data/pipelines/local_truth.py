"""Small pipelines in the shapes of KFP's own samples, where kfp.local's results need
care: each is one case of tests/test_run.py. (No `from __future__ import annotations`:
KFP reads the components' annotations as types.)"""

from typing import Dict, List

from kfp import dsl


@dsl.component(base_image="python:3.11")
def same(x: int) -> int:
    return x + 1


@dsl.component(base_image="python:3.11")
def show(data: dsl.Input[dsl.Dataset]) -> str:
    return data.uri


@dsl.component(base_image="python:3.11")
def echo(v: int) -> int:
    print("value", v)
    if v == 3:
        raise ValueError(f"three is bad: {v}")
    return v


@dsl.component(base_image="python:3.11")
def after() -> str:
    return "after"


@dsl.component(base_image="python:3.11")
def make(out: dsl.Output[dsl.Dataset]) -> None:
    with open(out.path, "w") as f:  # noqa: PTH123 (a component imports nothing of ours)
        f.write("x")


@dsl.component(base_image="python:3.11")
def read(data: dsl.Input[dsl.Dataset]) -> str:
    with open(data.path) as f:  # noqa: PTH123
        return f.read()


@dsl.container_component
def say(text: str) -> dsl.ContainerSpec:
    return dsl.ContainerSpec(image="alpine:3", command=["echo"], args=[text])


@dsl.pipeline(name="same")
def named_like_a_component(x: int = 1) -> int:
    return same(x=x).output


@dsl.pipeline(name="show")
def importer_named_like_a_component() -> str:
    imported = dsl.importer(artifact_uri="gs://bucket/x", artifact_class=dsl.Dataset)
    return show(data=imported.output).output


@dsl.pipeline
def nested_loop_over_a_field(items: list = [{"a": [1, 2]}, {"a": [4]}]) -> None:  # noqa: B006
    with dsl.ParallelFor(items) as item:
        with dsl.ParallelFor(item.a) as v:
            echo(v=v)


@dsl.pipeline
def loop_with_a_failing_iteration() -> None:
    with dsl.ParallelFor([1, 2, 3], parallelism=1) as v:
        done = echo(v=v)
    after().after(done)


@dsl.pipeline
def inner(data: dsl.Input[dsl.Dataset]) -> str:
    return read(data=data).output


@dsl.pipeline
def artifact_into_a_nested_pipeline() -> None:
    made = make()
    inner(data=made.outputs["out"])


@dsl.pipeline
def container_step() -> None:
    say(text="hi")


@dsl.component(base_image="python:3.11")
def total(xs: List[int], d: Dict[str, int]) -> int:  # noqa: UP006 (as KFP's samples write it)
    return int(sum(xs) + sum(d.values()))  # protobuf hands JSON numbers over as floats


@dsl.pipeline
def typed_lists(xs: List[int] = [1, 2], d: Dict[str, int] = {"a": 1}) -> int:  # noqa: B006, UP006
    return total(xs=xs, d=d).output


@dsl.component(base_image="python:3.11")
def env_value(name: str) -> str:
    import os

    return os.environ.get(name, "unset")


@dsl.pipeline
def reads_env() -> str:
    return env_value(name="LEVEL").output


@dsl.pipeline
def with_sub_pipelines() -> None:
    reads_env()
    reads_env()
