"""guardsmith: train the safety side of LLM systems on Kubeflow Pipelines."""
__version__ = "0.1.0"
