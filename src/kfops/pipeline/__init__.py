"""Project -> KFP IR (``compiler``), local runs with kfp.local (``local``), and the
step-level difference between two compiled pipelines (``diff``)."""
