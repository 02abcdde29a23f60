"""The report component (see README.md); compiled form in component.yaml."""
from guardsmith.components.report.component import report

__all__ = ['report']
