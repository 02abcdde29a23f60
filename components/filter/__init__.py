"""The filter component (see README.md); compiled form in component.yaml."""
from guardsmith.components.filter.component import filter_traces

__all__ = ['filter_traces']
