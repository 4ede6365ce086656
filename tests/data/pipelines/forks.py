"""Steps that probe how they were started: tests/test_forkserver.py runs them on the
fork server and checks that each behaves as a process of its own."""

from kfp import dsl


@dsl.component(base_image="python:3.11")
def mutate(folder: str) -> int:
    import atexit
    import json
    import os

    json.kfops_marker = 1  # a module changed here must not be changed in later steps
    # left unclosed on purpose: its data must still reach the file
    handle = open(os.path.join(folder, "unclosed.txt"), "w")  # noqa: SIM115, PTH123, PTH118
    handle.write("kept")
    atexit.register(lambda: open(os.path.join(folder, "atexit.txt"), "w").write("ran"))  # noqa: PTH123, PTH118, SIM115
    print("mutated", os.getpid())
    return os.getpid()


@dsl.component(base_image="python:3.11")
def check(folder: str, first_pid: int) -> str:
    import concurrent.futures
    import json
    import os
    import signal

    import numpy as np
    from joblib import Parallel, delayed
    from sklearn.ensemble import RandomForestClassifier

    assert not hasattr(json, "kfops_marker"), "a step saw another step's module change"
    assert os.getpid() != first_pid
    with open(os.path.join(folder, "unclosed.txt")) as f:  # noqa: PTH123, PTH118
        assert f.read() == "kept"
    with open(os.path.join(folder, "atexit.txt")) as f:  # noqa: PTH123, PTH118
        assert f.read() == "ran"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    import sys

    assert sys.stdin.read() == "", "a step reads end-of-file from stdin"
    # thread pools: BLAS, OpenMP (scikit-learn), joblib, plain threads
    a = np.ones((300, 300))
    assert float((a @ a)[0, 0]) == 300.0
    x = np.arange(40.0).reshape(20, 2)
    forest = RandomForestClassifier(n_estimators=4, n_jobs=2, random_state=0)
    forest.fit(x, [0, 1] * 10)
    assert Parallel(n_jobs=2, backend="threading")(delayed(abs)(-i) for i in range(4)) == [0, 1, 2, 3]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert list(pool.map(abs, [-1, -2])) == [1, 2]
    print("checked")
    return "ok"


@dsl.component(base_image="python:3.11")
def with_env() -> str:
    import os

    return os.environ["LEVEL"]


@dsl.component(base_image="python:3.11")
def exits(code: int) -> None:
    import os
    import signal
    import sys

    print("about to stop")
    if code < 0:
        os.kill(os.getpid(), -code)
    sys.exit(code)


@dsl.pipeline
def probes(folder: str) -> str:
    first = mutate(folder=folder)
    checked = check(folder=folder, first_pid=first.output)
    task = with_env().after(checked)
    task.set_env_variable("LEVEL", "debug")
    return checked.output


@dsl.pipeline
def stops(code: int) -> None:
    exits(code=code)


@dsl.component(base_image="python:3.11")
def waits(folder: str) -> None:
    import os
    import time

    with open(os.path.join(folder, "pid"), "w") as f:  # noqa: PTH123, PTH118
        f.write(str(os.getpid()))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until the test interrupts the run
        time.sleep(0.05)


@dsl.pipeline
def interrupted(folder: str) -> None:
    waits(folder=folder)
