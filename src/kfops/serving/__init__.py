"""Serving: the model locally (KServe model server) and on a cluster (KServe)."""
