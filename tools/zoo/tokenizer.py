"""A real CLIP BPE tokenizer, built offline from the vocabulary file that ``open_clip_torch`` ships.

CLIP's vocabulary is 256 byte symbols, the same with an end-of-word marker, the first merges of
``bpe_simple_vocab_16e6.txt.gz`` in order, and two special tokens. Keeping only the first ``merges`` merges gives a
smaller but valid BPE vocabulary (every merge is built from byte symbols and earlier merges), so a tiny CLIP does not
need a 49,408-row embedding. The files are written in the Hugging Face layout (``vocab.json``, ``merges.txt``) so
``CLIPTokenizer.from_pretrained`` loads them.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

from .sources import SourceMissing

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
START, END = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """The reversible byte → printable-character table that byte-level BPE uses (GPT-2, CLIP)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def bpe_vocabulary_file() -> Path:
    """Where ``open_clip_torch`` keeps CLIP's BPE merges (found without importing open_clip, which needs torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise SourceMissing("the 'open_clip_torch' package is not installed (pip install open_clip_torch)")
    path = Path(next(iter(spec.submodule_search_locations))) / BPE_FILE
    if not path.exists():
        raise SourceMissing(f"{path} not found in the installed open_clip_torch")
    return path


def write_clip_tokenizer_files(directory: Path, merges: int, bpe_file: Path | None = None) -> int:
    """Write ``vocab.json`` and ``merges.txt`` with the first ``merges`` merges; returns the vocabulary size."""
    lines = gzip.open(bpe_file or bpe_vocabulary_file(), "rt", encoding="utf-8").read().split("\n")
    pairs = [tuple(line.split()) for line in lines[1:1 + merges]]  # line 0 is a version header
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(p) for p in pairs] + [START, END]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(p) for p in pairs) + "\n",
                                          encoding="utf-8")
    return len(vocab)
