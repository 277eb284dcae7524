"""Registry of the merge methods."""

from .registry import METHODS, MergeMethod, Parameter, get_method

__all__ = ["METHODS", "MergeMethod", "Parameter", "get_method"]
