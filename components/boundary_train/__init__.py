"""The boundary_train component (see README.md); compiled form in component.yaml."""
from guardsmith.components.boundary_train.component import boundary_train

__all__ = ['boundary_train']
