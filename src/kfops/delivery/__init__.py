"""Delivery: Git and the live state of an environment -> a plan -> its effects. Composes
the stages (``pipeline``: Kubeflow Pipelines versions)."""
