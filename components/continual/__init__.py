"""The continual component (see README.md); compiled form in component.yaml."""
from guardsmith.components.continual.component import continual

__all__ = ['continual']
