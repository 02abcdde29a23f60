"""The subset component (see README.md); compiled form in component.yaml."""
from guardsmith.components.subset.component import subset

__all__ = ['subset']
