from collections.abc import Callable
from os import PathLike

__version__: str

def merge(request: str, progress: Callable[[str, int, int], None] | None = None) -> str: ...
def inspect(path: str | PathLike[str]) -> str: ...
def cosine_similarity(
    pretrained: str | PathLike[str],
    models: list[str | PathLike[str]],
    threads: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> str: ...
def write_model_set(directory: str | PathLike[str], spec: str) -> list[str]: ...
