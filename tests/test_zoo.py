"""The offline zoo: its builder (on small stand-in images), its tokenizer, and ``merge-rs demo`` on the shipped zoo."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pytest

from conftest import cli, load

torch = pytest.importorskip("torch")

from merge_rs.clip.demo import DEMO_MERGES, FINE_TUNED, PRETRAINED, learned_rows, run_demo  # noqa: E402
from merge_rs.clip.models import load_vision_encoder  # noqa: E402
from merge_rs.clip.pool import zoo_pool  # noqa: E402
from tools.zoo import build, lora, tokenizer  # noqa: E402
from tools.zoo.hashes import fingerprint  # noqa: E402

ZOO_TASKS = ["mnist", "digits", "fashion_mnist", "symbols", "icons", "textures", "letters", "scripts"]


@pytest.mark.slow
def test_demo_table_has_fusionbench_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("MERGE_RS_CACHE", str(tmp_path))
    result = run_demo("zoo", limit=40, device="cpu", adamerging_steps=3, progress=False)
    assert list(result.rows) == [FINE_TUNED, *DEMO_MERGES, *learned_rows(), PRETRAINED]
    assert result.tasks == ZOO_TASKS
    for task in result.tasks:
        assert result.rows[FINE_TUNED][task] == result.fine_tuned[task][task]
    individual = result.rows[FINE_TUNED]["average"]["accuracy"]
    assert individual > result.rows[PRETRAINED]["average"]["accuracy"]
    assert all(individual >= r["average"]["accuracy"] for r in result.rows.values())
    table = result.table().splitlines()
    assert table[0].split() == [*ZOO_TASKS, "average", "95%", "interval", "normalized"]
    assert table[2].startswith(FINE_TUNED) and table[2].endswith("100.0") and table[-1].startswith(PRETRAINED)
    assert result.test_sizes == dict.fromkeys(result.tasks, 40)
    assert result.lora is not None and list(result.lora.rows) == [FINE_TUNED, *DEMO_MERGES, PRETRAINED]
    assert result.lora.rows[PRETRAINED] is result.rows[PRETRAINED]
    assert result.lora.rows[FINE_TUNED]["average"]["accuracy"] > result.rows[PRETRAINED]["average"]["accuracy"]
    for row in result.rows.values():
        low, high = row["average"]["accuracy_ci95"]
        assert low <= row["average"]["accuracy"] <= high and high - low > 0.01


@pytest.mark.slow
def test_cli_demo_prints_the_table(tmp_path):
    out = cli("demo", "--limit", "10", "--quiet", "--device", "cpu", "--no-learned", "--report",
              tmp_path / "demo.json", "--plot", tmp_path / "demo.png")
    picture = (tmp_path / "demo.png").read_bytes()
    assert picture[:8] == b"\x89PNG\r\n\x1a\n" and len(picture) > 10_000
    assert "Accuracy (%) on each task's test set:" in out.stdout
    assert out.stdout.count("ties") >= 2 and "merge times (learned methods" in out.stdout
    assert "adamerging" not in out.stdout
    data = json.loads((tmp_path / "demo.json").read_text())
    assert set(data["rows"]) == {FINE_TUNED, *DEMO_MERGES, PRETRAINED}
    assert data["test_sizes"] == dict.fromkeys(data["tasks"], 10)
    assert data["normalized_accuracy"][FINE_TUNED] == 1.0
    assert "The same merges of the LoRA fine-tunes" in out.stdout and "ties (LoRA)" in out.stdout
    assert set(data["lora"]["rows"]) == {FINE_TUNED, *DEMO_MERGES, PRETRAINED}
    for row in data["rows"].values():
        assert set(row) == {*data["tasks"], "model_info", "average"} or row is data["rows"][FINE_TUNED]
        assert len(row["average"]["accuracy_ci95"]) == 2


def test_shipped_zoo_is_complete():
    pool = zoo_pool()
    manifest = json.loads((pool.base / "zoo.json").read_text())
    assert manifest["settings"]["tasks"] == pool.tasks
    assert json.loads((pool.pretrained_path() / "config.json").read_text())["model_type"] == "clip"
    for task in pool.tasks:
        assert json.loads((pool.model_path(task) / "config.json").read_text())["model_type"] == "clip_vision_model"
        for split in ("train", "validation", "test"):
            assert (pool.base / manifest["datasets"][task] / f"{split}.parquet").is_file()
    adapters = zoo_pool(lora=True)
    for task in pool.tasks:
        assert json.loads((adapters.model_path(task) / "adapter_config.json").read_text())["r"] == 8


def test_shipped_splits_are_disjoint_and_share_no_image_with_pretraining():
    from merge_rs.clip.data import load_split

    pool = zoo_pool()
    manifest = json.loads((pool.base / "zoo.json").read_text())
    pretraining = set((pool.base / manifest["pretraining_hashes"]).read_text().split())
    assert len(pretraining) > 10_000
    for task in pool.tasks:
        prints = {}
        for split in ("train", "validation", "test"):
            images = load_split(pool.dataset_source(task), split).dataset["image"]
            prints[split] = {fingerprint(image) for image in images}
            assert len(images) == manifest["split_sizes"][task][split], (task, split)
            assert not prints[split] & pretraining, (task, split)
        assert not prints["validation"] & (prints["train"] | prints["test"]), task
        assert not prints["train"] & prints["test"], task


def _fake_bpe(path):
    """A BPE merge file in CLIP's format: a header line, then merges built from earlier symbols."""
    merges = ["t h", "th e</w>", "o f</w>", "p h", "ph o", "pho t", "phot o</w>", "o n</w>"]
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(["bpe header", *merges, "z z"]))
    return path


def test_tokenizer_files_follow_clip_vocabulary_order(tmp_path):
    from transformers import CLIPTokenizer

    table = tokenizer.bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    size = tokenizer.write_clip_tokenizer_files(tmp_path, merges=8, bpe_file=_fake_bpe(tmp_path / "bpe.txt.gz"))
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    assert size == len(vocab) == 512 + 8 + 2
    assert vocab["photo</w>"] == 512 + 6 and vocab["<|endoftext|>"] == size - 1 and "zz" not in vocab
    tok = CLIPTokenizer.from_pretrained(tmp_path)
    ids = tok("a photo of the")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["<|startoftext|>", "a</w>", "photo</w>", "of</w>", "the</w>",
                                              "<|endoftext|>"]


def _stand_in_sources(n=120):
    """Small random-pattern images per class standing in for the real sources (which need Debian packages)."""
    from PIL import Image

    def make(classes, seed, mode, group=1):
        def source():
            rng = random.Random(seed)
            images, labels = [], []
            for i in range(n):
                label = i % classes
                image = Image.new(mode, (12, 12))
                image.putdata([(rng.randrange(64) + 19 * label) % 256 if mode == "L" else
                               ((rng.randrange(64) + 19 * label) % 256, 30 * label % 256, 0) for _ in range(144)])
                images.append(image)
                labels.append(label)
            return (images, labels) if group == 1 else (images, labels, [f"g{i // group}" for i in range(n)])
        return source

    return {"mnist": make(10, 1, "L"), "emoji": make(9, 2, "RGB", group=3)}  # emoji's images in threes


def _stand_in_corpus(seed):
    """Two captioned parts standing in for the pretraining corpus (which needs Debian packages)."""
    images, _ = _stand_in_sources(40)["mnist"]()
    return {"glyphs": [(im, (f"glyph {i % 7}.", f"a glyph number {i % 7}.")) for i, im in enumerate(images[:20])],
            "marks": [(im.rotate(90), (f"mark {i}.",)) for i, im in enumerate(images[20:])]}


def test_build_zoo_pipeline_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "SOURCES", _stand_in_sources())
    monkeypatch.setattr(build, "pretraining_corpus", _stand_in_corpus)
    monkeypatch.setattr(tokenizer, "bpe_vocabulary_file", lambda: _fake_bpe(tmp_path / "bpe.txt.gz"))
    settings = build.ZooSettings(tasks=("mnist", "emoji"), train_size=40, test_size=30, validation_size=10,
                                 image_size=16, patch_size=8, hidden=16, layers=1, heads=2, text_layers=1,
                                 bpe_merges=8, max_text_tokens=64, projection_dim=8, pretrain_steps=3, pretrain_batch=8,
                                 finetune_steps=2, finetune_batch=8)
    lines = []
    manifest = build.build_zoo(tmp_path / "zoo", settings, log=lines.append)
    assert "mnist: test 30, validation 10, slice 30, train 40, extra 10" in lines, lines
    assert "pretraining corpus: glyphs 20, marks 20, slice_mnist 30, slice_emoji 30" in lines
    assert any(line.startswith("fine-tuned emoji: final loss") and "embedding drift" in line for line in lines)
    assert manifest["split_sizes"]["emoji"] == {"test": 30, "validation": 12, "train": 42}  # whole groups of 3
    assert len((tmp_path / "zoo" / manifest["pretraining_hashes"]).read_text().split()) == 93  # 100, 7 repeats
    pool = zoo_pool(tmp_path / "zoo")
    assert pool.tasks == ["mnist", "emoji"] and manifest["settings"]["seed"] == 0
    assert not (tmp_path / "zoo.building").exists()
    from merge_rs.clip.evaluate import Evaluator, prepare_tasks

    tasks = prepare_tasks([(t, None) for t in pool.tasks], pool)
    evaluator = Evaluator(pool.pretrained_path(), tasks, device="cpu", progress=False)
    report = evaluator.evaluate(pool.load_vision("emoji"))
    assert 0 <= report["emoji"]["accuracy"] <= 1 and len(tasks[0].data) == 30
    assert any(line.startswith("fine-tuned emoji (LoRA): final loss") for line in lines), lines
    adapters = zoo_pool(tmp_path / "zoo", lora=True)
    assert adapters.name == "zoo-lora" and adapters.tasks == pool.tasks
    assert not (adapters.model_path("emoji") / "README.md").exists(), "PEFT's empty card template is dropped"
    config = json.loads((adapters.model_path("emoji") / "adapter_config.json").read_text())
    assert config["r"] == settings.lora_rank and sorted(config["target_modules"]) == sorted(lora.TARGETS)
    factors = load(adapters.model_path("emoji") / "adapter_model.safetensors")
    assert all(name.startswith("base_model.model.vision_model.encoder.") for name in factors)
    assert any(("lora_B" in name) and np.abs(values).max() > 0 for name, values in factors.items()), "trained"
    pretrained = evaluator.evaluate(load_vision_encoder(pool.pretrained_path()))
    tuned = evaluator.evaluate(adapters.load_vision("emoji"))
    assert tuned["emoji"]["loss"] != pretrained["emoji"]["loss"]


def test_split_indices_are_disjoint_and_seeded():
    settings = build.ZooSettings(train_size=50, test_size=20, validation_size=10, pretrain_slice=0)
    a = build.split_indices(200, settings, random.Random(3))
    assert a == build.split_indices(200, settings, random.Random(3))
    assert [len(a[k]) for k in build.SPLITS] == [20, 10, 50]
    assert len(set(a["test"]) | set(a["validation"]) | set(a["train"])) == 80
    small = build.split_indices(60, settings, random.Random(0))  # at most half for test, an eighth for validation
    assert [len(small[k]) for k in build.SPLITS] == [20, 7, 33]


def test_the_bootstrap_interval_matches_the_normal_approximation():
    from merge_rs.clip.statistics import bootstrap_interval, normalized_accuracy

    low, high = bootstrap_interval({"a": [True] * 300 + [False] * 100})
    half_width = 1.96 * (0.75 * 0.25 / 400) ** 0.5
    assert low == pytest.approx(0.75 - half_width, abs=0.006) and high == pytest.approx(0.75 + half_width, abs=0.006)
    two = bootstrap_interval({"a": [True] * 400, "b": [False] * 400})
    assert two == (0.5, 0.5)
    row = {"a": {"accuracy": 0.4}, "b": {"accuracy": 0.9}}
    assert normalized_accuracy(row, {"a": {"accuracy": 0.8}, "b": {"accuracy": 0.9}}, ["a", "b"]) == 0.75


def test_fingerprints_survive_the_parquet_round_trip_and_gimp_patterns_read(tmp_path):
    import io
    import struct

    from PIL import Image

    from tools.zoo.artwork import read_pattern

    image = _stand_in_sources(1)["emoji"]()[0][0].resize((32, 32))
    stored = io.BytesIO()
    image.save(stored, format="PNG")
    assert fingerprint(Image.open(stored)) == fingerprint(image) != fingerprint(image.rotate(90))
    pixels = bytes(range(2 * 3 * 3))
    (tmp_path / "p.pat").write_bytes(struct.pack(">IIIII4s", 29, 1, 3, 2, 3, b"GPAT") + b"red\0\0" + pixels)
    pattern = read_pattern(tmp_path / "p.pat")
    assert pattern.size == (3, 2) and pattern.tobytes() == pixels


def test_each_kind_of_symbol_is_drawn_by_fonts_that_have_its_glyphs():
    import unicodedata

    from tools.zoo.fonts import SYMBOL_BLOCKS, character_map, symbol_fonts
    from tools.zoo.missing import SourceMissing

    try:
        found = {kind: symbol_fonts(kind) for kind in SYMBOL_BLOCKS}
    except SourceMissing as e:
        pytest.skip(str(e))
    for kind, fonts in found.items():
        assigned = {c for low, high in SYMBOL_BLOCKS[kind] for c in range(low, high + 1)
                    if unicodedata.category(chr(c)) != "Cn"}
        for path, glyphs in fonts:
            assert "Symbola" not in path.name, "Symbola's emoji glyphs are in the pretraining corpus"
            assert {ord(g) for g in glyphs} <= character_map(path) & assigned, (kind, path)
            assert 3 * len(glyphs) >= len(assigned), (kind, path)
