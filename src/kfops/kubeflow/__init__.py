"""The Kubeflow Pipelines API: one client class with the calls delivery needs, built from
an environment's ``kfp:`` settings with explicit credentials. Knows nothing of GitHub."""
