"""The distill component (see README.md); compiled form in component.yaml."""
from guardsmith.components.distill.component import distill, distill_merge, distill_split, same_uri, reasoning_rows

__all__ = ['distill', 'distill_merge', 'distill_split', 'same_uri', 'reasoning_rows']
