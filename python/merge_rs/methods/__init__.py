"""The merge methods the Rust engine runs, as its method table declares them: names, papers, what each needs
and its typed parameters with defaults and help. The CLI options, the demo and the README's method table are
generated from this view; defaults and checks live only in the engine."""

from .table import METHODS, MethodInfo, Parameter, get_method, markdown_table

__all__ = ["METHODS", "MethodInfo", "Parameter", "get_method", "markdown_table"]
