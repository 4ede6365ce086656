"""Serving: the local KServe model server (``kfops serve``) and the data plane client."""
