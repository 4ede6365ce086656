from kfp import dsl


@dsl.component
def noop() -> None:
    pass


def helper(n: int) -> int:
    return n // 0


@dsl.pipeline
def broken() -> None:
    noop()
    helper(1)
