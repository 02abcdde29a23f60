"""The boundary component (see README.md); compiled form in component.yaml."""
from guardsmith.components.boundary.component import boundary

__all__ = ['boundary']
