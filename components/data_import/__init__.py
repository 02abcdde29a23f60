"""The data_import component (see README.md); compiled form in component.yaml."""
from guardsmith.components.data_import.component import data_import

__all__ = ['data_import']
