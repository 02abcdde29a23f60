"""The boundary_eval component (see README.md); compiled form in component.yaml."""
from guardsmith.components.boundary_eval.component import boundary_eval

__all__ = ['boundary_eval']
