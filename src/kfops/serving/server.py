"""``kfops serve``: the model of a local run, served by the KServe Python model server.

Finding the model (``find_model``) reads only the run's ``result.json``; loading and
serving import kserve and the model's framework, so nothing heavy is imported before
the command runs.
"""

from __future__ import annotations

import errno
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfops.errors import EXIT_USAGE, KfopsError, did_you_mean, display_path
from kfops.project.model import Project, Serving

FORMATS = ("sklearn", "xgboost", "lightgbm")
DEFAULT_PORT = 8080
_MODEL_TYPE = "system.Model"
# Model files a folder artifact may hold, by format, in the order they are tried.
_MODEL_FILES = {
    "sklearn": ("model.joblib", "model.pkl", "model.pickle"),
    "xgboost": ("model.bst", "model.json", "model.ubj"),
    "lightgbm": ("model.bst", "model.txt"),
}
_PIP = {"xgboost": "xgboost", "lightgbm": "lightgbm", "sklearn": "scikit-learn"}


@dataclass(frozen=True)
class ModelSource:
    """Where the served model comes from: a run's artifact, or a file given with --model."""

    path: Path
    run_id: str | None = None
    step: str | None = None
    artifact: str | None = None
    commit: str = ""  # the commit the run was made at (its result.json), "" if unrecorded

    def describe(self) -> str:
        if self.run_id is None:
            return display_path(self.path)
        return f"run {self.run_id}, step {self.step}, artifact {self.artifact}"


def serving_of(project: Project) -> Serving:
    """The project's ``serving:`` section.

    Raises:
        KfopsError: (exit 2) the project has none.
    """
    if project.serving is None:
        raise KfopsError(
            f"{project.shown} has no `serving:` section, so kfops does not know which model"
            " to serve",
            "add `serving: {model: {from_step: STEP, artifact: OUTPUT}, format: sklearn}`"
            f" to {project.shown}",
            exit_code=EXIT_USAGE,
        )
    return project.serving


def runs_folder(project: Project, runs_dir: Path | None = None) -> Path:
    return runs_dir.resolve() if runs_dir else project.root / ".kfops" / "runs"


def find_model(
    project: Project,
    *,
    run_id: str | None = None,
    runs_dir: Path | None = None,
    model_file: Path | None = None,
) -> ModelSource:
    """The model file to serve: ``model_file``, or ``serving.model``'s artifact in the
    given local run, else the run ``serving.model.run`` pins, else the latest.

    Raises:
        KfopsError: no serving section; ``serving.model.uri`` without ``model_file``; no
            run, an unknown run, a failed run; an unknown step or artifact (did-you-mean);
            an artifact that is not a Model or is missing on disk.
    """
    serving = serving_of(project)
    if model_file is not None:
        if not model_file.exists():
            raise KfopsError(f"--model {model_file}: no such file or folder", exit_code=EXIT_USAGE)
        return ModelSource(model_file.resolve())
    where = f"{project.shown}:{serving.mark.line}"
    if serving.uri is not None:
        raise KfopsError(
            f"serving.model.uri is {serving.uri} ({where}): `kfops serve` serves the model of a"
            " local run, not a remote one",
            "pass --model FILE to serve a model file on this machine, or set"
            " serving.model.from_step to serve a local run's model",
            exit_code=EXIT_USAGE,
        )
    if serving.from_step is None:
        raise KfopsError(
            f"serving.model has no `from_step` ({where})",
            "set serving.model.from_step to the step that outputs the model",
            exit_code=EXIT_USAGE,
        )
    folder = runs_folder(project, runs_dir)
    pinned = run_id is None and serving.run is not None
    try:
        result, chosen = _run_result(project, folder, run_id or serving.run)
    except KfopsError as exc:
        if not pinned:
            raise
        raise KfopsError(
            f"serving.model.run is {serving.run} ({project.shown}:"
            f"{serving.mark_of('model').line}), but {display_path(folder)} has no such local"
            " run (a run on Kubeflow, or one made on another machine?)",
            "serve a local run with --run ID, or a model file with --model FILE; "
            + (exc.hint or ""),
            exit_code=EXIT_USAGE,
        ) from None
    if not result.get("succeeded"):
        failed = [n for n, s in result.get("steps", {}).items() if s.get("status") != "SUCCESS"]
        raise KfopsError(
            f"run {chosen} failed"
            + (f" (at {', '.join(failed)})" if failed else "")
            + ", so it has no model to serve",
            f"fix the pipeline and run it again: `{_run_command(project)}`"
            + _other_runs_hint(folder, chosen),
        )
    steps: dict[str, Any] = result.get("steps", {})
    step = steps.get(serving.from_step)
    if step is None:
        hint = did_you_mean(
            serving.from_step, steps, f"the steps of run {chosen}: ", "the run has no steps"
        )
        raise KfopsError(
            f"serving.model.from_step: run {chosen} has no step `{serving.from_step}` ({where})",
            hint,
            exit_code=EXIT_USAGE,
        )
    outputs: dict[str, Any] = step.get("outputs", {})
    artifact = serving.artifact or _only_model(serving.from_step, outputs, where)
    value = outputs.get(artifact)
    if value is None:
        hint = did_you_mean(
            artifact,
            outputs,
            f"the outputs of {serving.from_step}: ",
            f"{serving.from_step} has no outputs",
        )
        raise KfopsError(
            f"serving.model.artifact: step {serving.from_step} has no output `{artifact}`"
            f" ({where})",
            hint,
            exit_code=EXIT_USAGE,
        )
    if not isinstance(value, dict) or value.get("artifact") != _MODEL_TYPE:
        kind = value.get("artifact") if isinstance(value, dict) else "a parameter"
        raise KfopsError(
            f"serving.model.artifact: `{artifact}` of {serving.from_step} is {kind},"
            f" not a {_MODEL_TYPE} ({where})",
            "name the step's Output[Model]",
            exit_code=EXIT_USAGE,
        )
    path = Path(str(value.get("uri", "")))
    if not path.exists():
        raise KfopsError(
            f"the model of run {chosen} is missing: {path} does not exist",
            f"run the pipeline again: `{_run_command(project)}`",
        )
    return ModelSource(path, chosen, serving.from_step, artifact, str(result.get("commit") or ""))


def _run_command(project: Project) -> str:
    shown = display_path(project.root)
    return "kfops run" if shown == "." else f"kfops run {shown}"


def _run_result(project: Project, folder: Path, run_id: str | None) -> tuple[dict[str, Any], str]:
    runs = (
        sorted(p.name for p in folder.iterdir() if (p / "result.json").is_file())
        if (folder.is_dir())
        else []
    )
    if run_id is None:
        if not runs:
            raise KfopsError(
                f"no local run of {project.name} in {display_path(folder)}, so there is no model"
                " to serve",
                f"run `{_run_command(project)}` first",
            )
        run_id = runs[-1]
    elif run_id not in runs:
        hint = did_you_mean(
            run_id, reversed(runs), "local runs: ", f"run `{_run_command(project)}` first"
        )
        raise KfopsError(
            f"--run {run_id}: no such run in {display_path(folder)}", hint, exit_code=EXIT_USAGE
        )
    file = folder / run_id / "result.json"
    try:
        result = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KfopsError(f"cannot read {display_path(file)}: {exc}") from None
    if not isinstance(result, dict):
        raise KfopsError(f"{display_path(file)} is not a run result")
    return result, run_id


def _other_runs_hint(folder: Path, failed: str) -> str:
    good = []
    for path in sorted(folder.iterdir(), reverse=True):
        try:
            if path.name != failed and json.loads((path / "result.json").read_text())["succeeded"]:
                good.append(path.name)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return f", or serve an earlier run: --run {good[0]}" if good else ""


def _only_model(step: str, outputs: dict[str, Any], where: str) -> str:
    models = sorted(
        name
        for name, value in outputs.items()
        if isinstance(value, dict) and value.get("artifact") == _MODEL_TYPE
    )
    if len(models) == 1:
        return models[0]
    what = "no Model output" if not models else f"{len(models)} Model outputs"
    raise KfopsError(
        f"step {step} has {what} ({where})",
        "set serving.model.artifact to one of: " + ", ".join(f"`{n}`" for n in sorted(outputs))
        if outputs
        else f"serve a step with an Output[Model], or {step} outputs nothing",
        exit_code=EXIT_USAGE,
    )


# --------------------------------------------------------------------------- loading


@dataclass
class LoadedModel:
    """A model object with how to predict with it and what it takes."""

    format: str
    model: Any
    file: Path
    n_features: int | None = None
    feature_names: tuple[str, ...] | None = None

    # The fitted column names were taken off the model (see load_model): kfops orders
    # the columns itself, and the model gets arrays.
    names_checked_here: bool = False

    def predict(self, inputs: Any) -> Any:
        if self.format == "xgboost":
            import xgboost  # type: ignore[import-not-found, import-untyped, unused-ignore]

            return self.model.predict(xgboost.DMatrix(inputs))
        return self.model.predict(self._columns(inputs))

    def _columns(self, inputs: Any) -> Any:
        """``inputs`` in the form the model takes: a frame's columns in the fitted order
        (as an array, when the names are checked here), or an array as a frame with
        the fitted names (scikit-learn warns about nameless input to a model fitted on a
        DataFrame, and checks a frame's names on each call, which costs about 2 ms)."""
        names = self.feature_names
        if names is None:
            return inputs
        columns = getattr(inputs, "columns", None)
        if columns is not None:
            missing = [n for n in names if n not in set(columns)]
            if missing:
                raise ValueError(
                    "the model takes the columns "
                    + ", ".join(names)
                    + "; missing: "
                    + ", ".join(missing)
                )
            ordered = inputs[list(names)]
            return ordered.to_numpy() if self.names_checked_here else ordered
        if self.names_checked_here:
            return inputs
        import numpy as np

        if isinstance(inputs, np.ndarray) and inputs.ndim == 2 and inputs.shape[1] == len(names):
            import pandas as pd  # type: ignore[import-not-found, import-untyped, unused-ignore]

            return pd.DataFrame(inputs, columns=list(names))
        return inputs


def load_model(serving_format: str, source: Path) -> LoadedModel:
    """Load the model file (or folder) ``source`` of the given ``serving.format``.

    Raises:
        KfopsError: an unsupported format, a missing framework package, or a file the
            framework cannot read.
    """
    if serving_format not in FORMATS:
        raise KfopsError(
            f"serving.format is {serving_format}: `kfops serve` serves sklearn, xgboost and"
            " lightgbm models",
            f"serve a {serving_format} model on KServe with its runtime (`kfops deploy`)",
            exit_code=EXIT_USAGE,
        )
    file = _model_file(serving_format, source)
    try:
        if serving_format == "sklearn":
            import joblib  # type: ignore[import-not-found, import-untyped, unused-ignore]

            loaded = LoadedModel(serving_format, joblib.load(file), file)
        elif serving_format == "xgboost":
            import xgboost  # type: ignore[import-not-found, import-untyped, unused-ignore]

            booster = xgboost.Booster()
            booster.load_model(str(file))
            loaded = LoadedModel(serving_format, booster, file, booster.num_features())
        else:
            import lightgbm  # type: ignore[import-not-found, import-untyped, unused-ignore]

            model = lightgbm.Booster(model_file=str(file))
            loaded = LoadedModel(serving_format, model, file, model.num_feature())
    except ImportError as exc:
        raise KfopsError(
            f"serving.format is {serving_format}, but {exc.name or _PIP[serving_format]}"
            " is not installed here",
            f"pip install {_PIP[serving_format]}",
        ) from None
    except Exception as exc:  # the framework's own errors: a wrong or damaged file
        raise KfopsError(
            f"cannot load {display_path(file)} as a {serving_format} model:"
            f" {type(exc).__name__}: {exc}",
            "check serving.format and serving.model",
        ) from None
    if serving_format == "sklearn":
        if not callable(getattr(loaded.model, "predict", None)):
            raise KfopsError(
                f"{display_path(file)} holds a {type(loaded.model).__name__}, which has no"
                " predict()",
                "save the fitted estimator itself (joblib.dump(model, path))",
            )
        names = getattr(loaded.model, "feature_names_in_", None)
        loaded.feature_names = tuple(str(n) for n in names) if names is not None else None
        if names is not None and "feature_names_in_" in vars(loaded.model):
            # An estimator fitted on a DataFrame (not a Pipeline, whose names come from
            # its first step): take its names off, so it predicts on arrays; kfops
            # orders the columns by these names itself.
            del loaded.model.feature_names_in_
            loaded.names_checked_here = True
        count = getattr(loaded.model, "n_features_in_", None)
        loaded.n_features = int(count) if count is not None else None
    return loaded


def _model_file(serving_format: str, source: Path) -> Path:
    if source.is_file():
        return source
    for name in _MODEL_FILES[serving_format]:
        if (source / name).is_file():
            return source / name
    present = sorted(p.name for p in source.iterdir()) if source.is_dir() else []
    raise KfopsError(
        f"{display_path(source)} holds no {serving_format} model file"
        f" ({', '.join(_MODEL_FILES[serving_format])})",
        "files there: " + ", ".join(present) if present else "the folder is empty",
    )


# --------------------------------------------------------------------------- serving


def port_free(port: int) -> None:
    """Raise a KfopsError when ``port`` cannot be listened on (all interfaces, as KServe)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("0.0.0.0", port))  # as KServe does: all interfaces
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise KfopsError(
                f"port {port} is in use (another server, or an earlier `kfops serve`?)",
                "pass --port N with a free port, or stop what listens on it",
            ) from None
        raise KfopsError(f"cannot listen on port {port}: {exc.strerror}", "pass --port N") from None
    finally:
        probe.close()


def kserve_model(name: str, loaded: LoadedModel, log: Callable[[str], None] | None = None) -> Any:
    """A ``kserve.Model`` named ``name`` that predicts with ``loaded`` (V1 and V2)."""
    import kserve  # type: ignore[import-not-found, import-untyped, unused-ignore]
    from kserve.utils.utils import get_predict_input, get_predict_response  # type: ignore[import-not-found, import-untyped, unused-ignore]

    class ServedModel(kserve.Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(name)
            self.ready = True

        def load(self) -> bool:
            self.ready = True
            return True

        def get_input_types(self) -> list[dict[str, Any]]:
            if loaded.n_features is None:
                return []
            return [{"name": "input-0", "datatype": "FP64", "shape": [-1, loaded.n_features]}]

        def get_output_types(self) -> list[dict[str, Any]]:
            classes = getattr(loaded.model, "classes_", None)
            if classes is None:
                return []
            from kserve.utils.numpy_codec import from_np_dtype  # type: ignore[import-not-found, import-untyped, unused-ignore]

            return [{"name": "output-0", "datatype": from_np_dtype(classes.dtype), "shape": [-1]}]

        def predict(
            self,
            payload: Any,
            headers: dict[str, str] | None = None,
            response_headers: dict[str, str] | None = None,
        ) -> Any:
            started = time.perf_counter()
            protocol = "v1" if isinstance(payload, dict) else "v2"
            if protocol == "v2" and len(payload.inputs) > 1:
                inputs = payload.as_dataframe()
            else:
                inputs = get_predict_input(payload)
            try:
                result = loaded.predict(inputs)
            except Exception as exc:
                if log is not None:
                    log(f"{protocol} predict failed: {type(exc).__name__}: {exc}")
                raise kserve.errors.InferenceError(f"{type(exc).__name__}: {exc}") from exc
            if log is not None:
                count = len(result) if hasattr(result, "__len__") else 1
                ms = (time.perf_counter() - started) * 1000
                log(f"{protocol} predict: {count} row{'s' * (count != 1)} in {ms:.1f} ms")
            if protocol == "v2" and getattr(getattr(result, "dtype", None), "kind", "") == "U":
                # kserve 0.21 encodes a numpy str array as if it held bytes and fails
                # ("decoding str is not supported"); as objects it writes them as is.
                result = result.astype(object)
            return get_predict_response(payload, result, self.name)

    return ServedModel()


@dataclass(frozen=True)
class Urls:
    base: str
    v1: str
    v2: str
    ready: str


def ready_message(project: Project, source: ModelSource, where: Urls) -> str:
    """What ``kfops serve`` says once the model answers: the URLs and a predict command."""
    serving = serving_of(project)
    port = int(where.base.rsplit(":", 1)[1])
    shown = display_path(project.root)
    command = "kfops predict" + ("" if shown == "." else f" {shown}") + " --local"
    command += ("" if port == DEFAULT_PORT else f" --port {port}") + " --data rows.json"
    return "\n".join(
        [
            f"serving {serving.name} ({serving.format}, {source.describe()}) on port {port}",
            f"  V1 predict: POST {where.v1}",
            f"  V2 infer:   POST {where.v2}",
            f"  ready:      GET  {where.ready}",
            f"  try: {command}",
            "ready; Ctrl-C stops",
        ]
    )


def urls(name: str, port: int) -> Urls:
    base = f"http://127.0.0.1:{port}"
    return Urls(
        base,
        f"{base}/v1/models/{name}:predict",
        f"{base}/v2/models/{name}/infer",
        f"{base}/v2/models/{name}/ready",
    )


def _quiet_kserve() -> None:
    """kserve logs every step of its start, and every request twice, at INFO; kfops says
    what matters itself (the ready message, one line a request)."""
    import logging
    import warnings

    for logger in ("kserve.trace", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(logger).setLevel(logging.WARNING)
    # kserve logs a traceback for each request it rejects (an unknown model, bad input);
    # the caller gets the error, and ServedModel logs its own failures in one line.
    logging.getLogger("kserve").setLevel(logging.CRITICAL)
    # kserve 0.21 answers with ORJSONResponse, which FastAPI deprecates on every request.
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")


def import_kserve() -> Any:
    """Import kserve, which parses ``sys.argv`` when imported (kserve/model_server.py:
    ``parser.parse_known_args()``): kfops' own options must not reach it."""
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        import kserve  # type: ignore[import-not-found, import-untyped, unused-ignore]
    finally:
        sys.argv = argv
    return kserve


def serve(
    name: str,
    loaded: LoadedModel,
    port: int,
    *,
    on_ready: Callable[[Urls], None],
    log: Callable[[str], None],
) -> None:
    """Serve ``loaded`` as ``name`` on ``port`` until SIGINT or SIGTERM; ``on_ready`` is
    called once the server answers its readiness probe.

    Raises:
        KfopsError: the port is in use.
    """
    kserve = import_kserve()
    port_free(port)
    model = kserve_model(name, loaded, log)
    server = kserve.ModelServer(http_port=port, enable_grpc=False, workers=1)
    _quiet_kserve()  # after ModelServer(), which configures kserve's logging
    # uvicorn stops gracefully on SIGINT and SIGTERM by itself. kserve's own handlers
    # (ModelServer.register_signal_handler) call asyncio.create_task from the signal
    # handler, which fails when ^C comes before the event loop runs and leaves the server
    # deaf to ^C; without them an early ^C is a KeyboardInterrupt, as anywhere.
    server.register_signal_handler = lambda: None
    where = urls(name, port)
    threading.Thread(target=_announce, args=(where, on_ready), daemon=True).start()
    try:
        server.start([model])
    finally:
        # The interpreter's last garbage collection over kserve's (and kfp's) objects
        # takes a second or more; nothing there needs finalizing, so skip it.
        import gc

        gc.freeze()


def _announce(where: Urls, on_ready: Callable[[Urls], None], timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(where.ready, timeout=1.0).status_code == 200:
                on_ready(where)
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
