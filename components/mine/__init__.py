"""The mine component (see README.md); compiled form in component.yaml."""
from guardsmith.components.mine.component import mine

__all__ = ['mine']
