"""The evaluate component (see README.md); compiled form in component.yaml."""
from guardsmith.components.evaluate.component import evaluate

__all__ = ['evaluate']
