"""The distill component (see README.md); compiled form in component.yaml."""
from guardsmith.components.distill.component import distill, distill_merge, distill_split

__all__ = ['distill', 'distill_merge', 'distill_split']
