"""A fork server for ``kfops run``: steps start as forks of a process that has already
imported kfp's executor and the libraries the steps import, instead of as fresh Python
processes that import them again (about a second a step for pandas and scikit-learn).

The server is single-threaded and only imports: it never runs user code (an OpenMP
region run before a fork would hang the child). For each step it forks a monitor,
which forks the step and reports its exit status; the step runs kfp's own executor
entry point with the task's argv, environment and working directory, its output on a
pipe that the worker reads like a subprocess's. Each step is still a process of its
own: isolation, exit codes and signals behave as with a subprocess.

Only Linux, and only lightweight Python components whose command needs nothing but
the executor (no `pip install` left, this interpreter, no per-task environment that a
module could read at import time) take this path; everything else, and any failure of
the server, falls back to kfp.local's subprocess.

Usage (internal): python -m kfops.pipeline._forkserver SOCKET_PATH [MODULE ...]
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_EXECUTOR = re.compile(r"_KFP_RUNTIME=true (?P<python>\S+) -m kfp\.dsl\.executor_main\s")
_PROGRAM = '"$program_path/ephemeral_component.py"'
_READY = "kfops-forkserver-ready"
_MAX_MESSAGE = 1 << 24


def supported() -> bool:
    """Whether this platform can fork steps safely (Linux; macOS forks badly with its
    system frameworks loaded, and Windows does not fork)."""
    return (
        sys.platform.startswith("linux")
        and hasattr(os, "fork")
        and hasattr(socket, "send_fds")
        and os.environ.get("KFOPS_LOCAL_FORK", "1") != "0"
    )


def lightweight_call(full_command: list[str]) -> list[str] | None:
    """The executor's arguments (component source, then ``--executor_input ...``) when
    ``full_command`` is kfp's lightweight-component wrapper and needs nothing else
    from the shell: no `pip install` left in it, and this interpreter. None otherwise."""
    if len(full_command) < 7 or full_command[:2] != ["sh", "-c"]:
        return None
    prologue, runner = full_command[2], full_command[5]
    if full_command[3:5] != ["sh", "-ec"] or "pip install" in prologue:
        return None
    if not prologue.rstrip().endswith('"$0" "$@"') or _PROGRAM not in runner:
        return None
    match = _EXECUTOR.search(runner)
    if match is None or match["python"] != sys.executable:
        return None
    return full_command[6:]


def preload_modules(sources: Iterable[str]) -> list[str]:
    """The installed modules that components' sources import (and the code in string
    literals, such as a notebook's cells, imports), for the server to import once.
    Imports inside nested functions are lazy on purpose and are left so; so are the
    modules of the user's own project: importing them runs user code."""
    found: set[str] = set()
    for source in sources:
        _imports(source, found, depth=0)
    return sorted(name for name in found if _installed(name))


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def _imports(source: str, found: set[str], depth: int) -> None:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    # a component's function (at the top of its module) runs; what it nests does not
    stack: list[ast.AST] = [
        inner
        for node in tree.body
        for inner in (node.body if isinstance(node, ast.FunctionDef) and depth == 0 else [node])
    ]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and "import" in node.value
            and depth < 2
        ):
            _imports(node.value, found, depth + 1)
        if not isinstance(node, _SCOPES):
            stack.extend(ast.iter_child_nodes(node))


def _installed(module: str) -> bool:
    """Whether ``module`` is the standard library's or an installed package's."""
    import importlib.util
    import sysconfig

    top = module.split(".")[0]
    if top in sys.builtin_module_names or top in sys.stdlib_module_names:
        return True
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None or spec.origin is None:
        return False
    roots = {sysconfig.get_paths()[key] for key in ("purelib", "platlib", "stdlib")}
    return any(Path(spec.origin).is_relative_to(root) for root in roots)


def socket_path(folder: Path) -> Path:
    """Where the server started for ``folder`` listens."""
    return folder / "forkserver.sock"


class ForkServer:
    """The worker's handle on a running server (see the module's docstring)."""

    def __init__(self, process: subprocess.Popen[str] | None, path: Path) -> None:
        self.process = process  # None: another process started it and stops it
        self.path = path

    @staticmethod
    def launch(
        modules: list[str], folder: Path, stderr: Any = None
    ) -> subprocess.Popen[str] | None:
        """Start a server that imports ``modules``, without waiting for it: it says
        ``_READY`` on its stdout when it takes steps, and stops at the end of its stdin.
        None if it could not start."""
        command = [sys.executable, "-m", "kfops.pipeline._forkserver", str(socket_path(folder))]
        try:
            return subprocess.Popen(
                [*command, *modules],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        except OSError:
            return None

    @classmethod
    def adopt(cls, ready_fd: int, path: Path) -> ForkServer | None:
        """A server that ``kfops run`` launched (before compiling), once it says on
        ``ready_fd`` (its stdout) that it is ready; None if it never does."""
        with os.fdopen(ready_fd, encoding="utf-8", errors="replace") as ready:
            line = ready.readline()
        return cls(None, path) if line.strip() == _READY else None

    @classmethod
    def start(cls, modules: list[str], folder: Path) -> ForkServer | None:
        """Start a server that imports ``modules``; None if it could not start."""
        path = socket_path(folder)
        process = cls.launch(modules, folder)
        if process is None:
            return None
        assert process.stdout is not None
        if process.stdout.readline().strip() != _READY:
            process.kill()
            cls(process, path).stop()
            return None
        return cls(process, path)

    def run(self, call: list[str], cwd: str, env: dict[str, str], out: Any) -> int | None:
        """Run a step: its output line by line to ``out(line)``, its exit code returned
        (negative: killed by that signal). None when the server cannot take it."""
        if self.process is not None and self.process.poll() is not None:
            return None
        read_end, write_end = os.pipe()
        try:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(str(self.path))
            request = json.dumps({"argv": call, "cwd": cwd, "env": env}).encode()
            socket.send_fds(client, [len(request).to_bytes(8, "big") + request], [write_end])
        except OSError:
            os.close(read_end)
            return None
        finally:
            os.close(write_end)
        with client, os.fdopen(read_end, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                out(line)
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = client.recv(64)
                if not chunk:
                    return None  # the monitor died: say so as a failure of the server
                reply += chunk
        return int(reply)

    def stop(self) -> None:
        if self.process is None:
            return
        for pipe in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()  # the server exits at the end of its stdin
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- the server ------------------------------------------------------------------------


def _serve(path: str, modules: list[str]) -> None:
    import gc
    import importlib

    # Ctrl-C reaches the whole process group: the steps stop, the server waits for the
    # worker to close its stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["_KFP_RUNTIME"] = "true"  # as the executor is imported in a step
    importlib.import_module("kfp.dsl.executor_main")
    for module in modules:
        with contextlib.suppress(Exception):
            importlib.import_module(module)
    os.environ.pop("_KFP_RUNTIME")
    gc.collect()
    gc.freeze()  # what is imported stays shared with the children (no copy on write)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(sys.stdin, selectors.EVENT_READ, "stdin")
    print(_READY, flush=True)
    while True:
        for key, _ in selector.select(timeout=1.0):
            if key.data == "stdin" and not sys.stdin.readline():
                listener.close()
                return
            if key.data == "accept":
                connection, _ = listener.accept()
                _fork_step(connection)
        _reap()


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _fork_step(connection: socket.socket) -> None:
    try:
        message, fds, _, _ = socket.recv_fds(connection, _MAX_MESSAGE, 1)
        size = int.from_bytes(message[:8], "big")
        while len(message) < size + 8:
            chunk = connection.recv(size + 8 - len(message))
            if not chunk:
                raise OSError("short request")
            message += chunk
        request = json.loads(message[8:])
    except (OSError, ValueError):
        connection.close()
        return
    if os.fork() == 0:  # the monitor
        try:
            _monitor(connection, request, fds[0])
        finally:
            os._exit(0)
    connection.close()
    os.close(fds[0])


def _monitor(connection: socket.socket, request: dict[str, Any], output: int) -> None:
    pid = os.fork()
    if pid == 0:
        connection.close()
        code = 1
        try:
            code = _step(request, output)
        finally:
            os._exit(code)
    os.close(output)
    _, status = os.waitpid(pid, 0)
    connection.sendall(b"%d\n" % os.waitstatus_to_exitcode(status))


def _step(request: dict[str, Any], output: int) -> int:
    """In the forked step: what `sh -ec '... python -m kfp.dsl.executor_main ...'` does."""
    import atexit
    import logging
    import threading

    signal.signal(signal.SIGINT, signal.default_int_handler)
    # the server's stdin is the worker's control pipe: a step that reads stdin gets
    # end-of-file, as a pipeline step does, instead of waiting on the pipe
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    sys.stdout = open(1, "w", encoding="utf-8", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", buffering=1, closefd=False)  # noqa: SIM115
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ["_KFP_RUNTIME"] = "true"
    source, *arguments = request["argv"]
    folder = tempfile.mkdtemp()
    program = Path(folder) / "ephemeral_component.py"
    program.write_text(source, encoding="utf-8")
    sys.argv = [
        "kfp.dsl.executor_main",
        "--component_module_path",
        str(program),
        *arguments,
    ]
    sys.path[0] = request["cwd"]  # `python -m` puts the working directory first
    logging.root.handlers.clear()  # the executor sets up its own logging
    code = 0
    try:
        from kfp.dsl import executor_main

        executor_main.executor_main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    # A fast but complete exit: what the interpreter does at its end, without tearing
    # down every module (a bare os._exit would lose data still in unclosed files).
    threading._shutdown()  # type: ignore[attr-defined]  # joins non-daemon threads
    atexit._run_exitfuncs()
    _flush_open_files()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    return code


def _flush_open_files() -> None:
    import gc
    import io

    for obj in gc.get_objects():
        if isinstance(obj, io.IOBase):
            with contextlib.suppress(Exception):
                if not obj.closed:
                    obj.flush()


def main(argv: list[str]) -> int:
    path, *modules = argv
    try:
        _serve(path, modules)
    finally:
        with contextlib.suppress(OSError):
            Path(path).unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
