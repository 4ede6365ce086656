"""mlops.yaml -> ``Project``: read with positions, checked against the schema and the
pipeline's source, frozen. Imports nothing heavy (``kfops validate`` stays fast)."""
