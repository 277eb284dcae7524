"""merge-rs: merge fine-tuned models from safetensors checkpoints, streaming, in bounded memory.

>>> import merge_rs
>>> report = merge_rs.merge("ties", ["ft/a", "ft/b"], "merged", pretrained="base")  # doctest: +SKIP
"""

from ._core import __version__
from .api import cosine_similarity, inspect, merge, parse_size
from .lora import extract_lora
from . import exceptions
from .exceptions import *  # noqa: F403 (the names are listed in exceptions.__all__)
from .methods import METHODS, get_method
from .reports import CheckpointInfo, CosineSimilarity, ExtractReport, MergeReport

__all__ = [
    "__version__",
    "merge",
    "inspect",
    "cosine_similarity",
    "extract_lora",
    "ExtractReport",
    "parse_size",
    "METHODS",
    "get_method",
    "MergeReport",
    "CheckpointInfo",
    "CosineSimilarity",
    *exceptions.__all__,
]
