"""kfops: GitOps CI/CD for machine learning on Kubeflow."""

__version__ = "0.1.0"
