"""The sft component (see README.md); compiled form in component.yaml."""
from guardsmith.components.sft.component import sft

__all__ = ['sft']
