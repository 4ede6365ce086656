"""A real KServe model server for the release tests: an iris classifier under a name.

    python model_server.py --port 9001 --name iris --behaviour good|wrong|slow

``good`` predicts with a random forest trained at start; ``wrong`` always answers class 1
(a model that loads but fails the smoke test); ``slow`` is good but takes 1.5 s a request.
It stands for the predictor a cluster would run; the fake controller writes its URL into
the InferenceService's status.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import kserve
import numpy as np
from kserve import InferRequest, InferResponse
from kserve.utils.utils import get_predict_input, get_predict_response
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier


class Iris(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, behaviour: str) -> None:
        super().__init__(name)
        self.behaviour = behaviour
        data = load_iris()
        self.model = RandomForestClassifier(n_estimators=20, random_state=0)
        self.model.fit(data.data, data.target)
        self.ready = True

    def predict(
        self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        rows = np.asarray(get_predict_input(payload), dtype=float)
        if self.behaviour == "slow":
            time.sleep(1.5)
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
    args = parser.parse_args()
    model = Iris(args.name, args.behaviour)
    kserve.ModelServer(http_port=args.port, enable_grpc=False, workers=1).start([model])


if __name__ == "__main__":
    main()
