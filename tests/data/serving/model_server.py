"""A real KServe model server for the release tests: an iris classifier under a name.

    python model_server.py --port 9001 --name iris --behaviour good|wrong|slow [--delay-ms 150]

``good`` predicts with a random forest trained at start; ``wrong`` always answers class 1
(a model that loads but fails the smoke test); ``slow`` answers as ``good`` does, but each
request takes ``--delay-ms`` longer (150 by default), give or take up to 10% drawn from a
generator seeded with ``--seed``: the same run of requests is slowed the same way each time.
It stands for the predictor a cluster would run; the fake controller writes its URL into
the InferenceService's status.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

import kserve
import numpy as np
from kserve import InferRequest, InferResponse
from kserve.utils.utils import get_predict_input, get_predict_response
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier


class Iris(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, behaviour: str, delay_ms: float = 150.0, seed: int = 0) -> None:
        super().__init__(name)
        self.behaviour = behaviour
        self.delay_ms = delay_ms
        self.jitter = random.Random(seed)
        data = load_iris()
        self.model = RandomForestClassifier(n_estimators=20, random_state=0)
        self.model.fit(data.data, data.target)
        self.ready = True

    def predict(
        self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        rows = np.asarray(get_predict_input(payload), dtype=float)
        if self.behaviour == "slow":
            time.sleep(self.delay_ms * self.jitter.uniform(0.9, 1.1) / 1000)
        if self.behaviour == "wrong":
            predicted = np.ones(len(rows), dtype=np.int64)
        else:
            predicted = self.model.predict(rows).astype(np.int64)
        return get_predict_response(payload, predicted, self.name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="iris")
    parser.add_argument("--behaviour", default="good", choices=["good", "wrong", "slow"])
    parser.add_argument("--delay-ms", type=float, default=150.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = Iris(args.name, args.behaviour, args.delay_ms, args.seed)
    kserve.ModelServer(http_port=args.port, enable_grpc=False, workers=1).start([model])


if __name__ == "__main__":
    main()
