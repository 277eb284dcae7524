"""The zoo's experiment harness (``tools/zoo/experiment``) on a stand-in cache: splits with pretraining slices, slice
captions, settings overrides, a full run with every measurement and the pretraining reuse, its TIES against the
engine's, and the report."""

import json
import random

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tools.zoo import tokenizer  # noqa: E402
from tools.zoo.experiment import measure, report  # noqa: E402
from tools.zoo.experiment.cache import CACHED_SETTINGS, IMAGES, META  # noqa: E402
from tools.zoo.experiment.run import run_one  # noqa: E402
from tools.zoo.settings import ZooSettings  # noqa: E402
from tools.zoo.slices import DOMAIN_CAPTIONS, slice_captions  # noqa: E402
from tools.zoo.splits import split_indices  # noqa: E402
from tools.zoo.training import anchor_pool, finetune  # noqa: E402

TINY = dict(tasks=("mnist", "emoji"), test_size=30, validation_size=10, train_size=40, finetune_extra=10,
            pretrain_slice=20, image_size=16, patch_size=8, hidden=16, layers=1, heads=2, text_layers=1, bpe_merges=8,
            max_text_tokens=64, projection_dim=8, pretrain_steps=4, pretrain_batch=8, finetune_steps=3,
            finetune_batch=8)


def test_split_indices_cut_a_pretraining_slice_no_split_holds():
    settings = ZooSettings(test_size=1000, validation_size=250, train_size=100, finetune_extra=50, pretrain_slice=1500)
    parts = split_indices(1800, settings, random.Random(1))
    assert {k: len(v) for k, v in parts.items()} == {"test": 450, "validation": 225, "slice": 450, "train": 100,
                                                      "extra": 50}
    everything = [i for part in parts.values() for i in part]
    assert len(everything) == len(set(everything))
    assert "slice" not in split_indices(1800, ZooSettings(pretrain_slice=0), random.Random(1))  # off at 0


def test_a_grouped_source_splits_by_group_and_no_group_straddles_two_parts():
    groups = [f"unit{i // 7}" for i in range(700)]  # 100 units of 7 frames
    settings = ZooSettings(test_size=1000, validation_size=250, train_size=200, finetune_extra=50, pretrain_slice=1500)
    parts = split_indices(700, settings, random.Random(1), groups)
    assert parts == split_indices(700, settings, random.Random(1), groups)
    assert {k: len(v) for k, v in parts.items()} == {"test": 175, "validation": 91, "slice": 175, "train": 203,
                                                      "extra": 56}  # whole units, the last one past the share
    owner = {groups[i]: part for part, indices in parts.items() for i in indices}
    assert all(owner[groups[i]] == part for part, indices in parts.items() for i in indices)
    assert len(owner) == 100 and sum(map(len, parts.values())) == 700
    with pytest.raises(ValueError, match="3 groups for 4 images"):
        split_indices(4, settings, random.Random(1), ["a", "b", "c"])


def test_a_wesnoth_sprite_belongs_to_its_unit():
    from tools.zoo.wesnoth import UNITS, unit_of

    assert unit_of(UNITS / "dwarves" / "ulfserker-attack-3.png") == "dwarves/ulfserker"
    assert unit_of(UNITS / "dwarves" / "ulfserker.png") == "dwarves/ulfserker"
    assert unit_of(UNITS / "elves-wood" / "scout" / "scout-moving.png") == "elves-wood/scout"


def test_slice_captions_mix_class_prompts_and_domain_captions():
    prompts = [(f"class {c}.",) for c in range(10)]
    labels = [i % 10 for i in range(2000)]
    captions = slice_captions("mnist", labels, prompts, 0.3, seed=0)
    with_class = [c for c in captions if c != DOMAIN_CAPTIONS["mnist"]]
    assert 0.25 < len(with_class) / len(captions) < 0.35
    assert all(c == prompts[label] for c, label in zip(captions, labels) if c in with_class)
    assert captions == slice_captions("mnist", labels, prompts, 0.3, seed=0)
    assert all(c == DOMAIN_CAPTIONS["mnist"] for c in slice_captions("mnist", labels, prompts, 0.0, seed=0))


def test_sources_lose_their_exact_repeats_before_the_split():
    from PIL import Image

    from tools.zoo.hashes import distinct

    images = [Image.new("L", (8, 8), v) for v in (0, 90, 0, 180, 90)]
    kept, labels, groups = distinct(images, [0, 1, 2, 3, 4])
    assert labels == [0, 1, 3] and kept == [images[0], images[1], images[3]] and groups is None
    assert distinct(images, [0, 1, 2, 3, 4], list("abcde"))[2] == ["a", "b", "d"]  # a grouped source's groups


def test_settings_overrides_convert_and_refuse_unknown_names():
    settings = ZooSettings().with_overrides({"hidden": "128", "finetune_lr": "3e-5", "tasks": "mnist,digits"})
    assert (settings.hidden, settings.finetune_lr, settings.tasks) == (128, 3e-5, ("mnist", "digits"))
    lengths = ZooSettings().with_pairs(["finetune_steps_by_task=scripts=2500,icons=1200"])
    assert (lengths.steps_for("scripts"), lengths.steps_for("icons"), lengths.steps_for("mnist")) == (2500, 1200, 900)
    with pytest.raises(ValueError, match="TASK=STEPS items .got 'scripts'"):
        ZooSettings().with_pairs(["finetune_steps_by_task=scripts"])
    anchors = ZooSettings().with_pairs(["finetune_anchor_by_task=icons=30,scripts=0"])
    assert (anchors.anchor_for("icons"), anchors.anchor_for("scripts"), anchors.anchor_for("mnist")) == (30, 0, 10)
    with pytest.raises(ValueError, match="TASK=WEIGHT items .got 'icons=-1'"):
        ZooSettings().with_pairs(["finetune_anchor_by_task=icons=-1"])
    with pytest.raises(ValueError, match="unknown zoo setting.*widht"):
        ZooSettings().with_overrides({"widht": 3})
    assert ZooSettings().with_pairs(["patch_size = 8", "seed=3"]).patch_size == 8
    with pytest.raises(ValueError, match="--set takes KEY=VALUE"):
        ZooSettings().with_pairs(["patch_size"])


def _stand_in_cache(root, settings):
    """A cache as ``prepare`` writes it, from random images (the real one needs Debian's packages)."""
    import numpy as np

    gen = np.random.default_rng(0)
    arrays, prompts = {}, {"mnist": [[f"a photo of the number {d}."] for d in range(10)],
                           "emoji": [[f"an emoji of group {g}.", f"group {g}."] for g in range(9)]}
    for task, classes in (("mnist", 10), ("emoji", 9)):
        for part, n in (("test", 30), ("validation", 10), ("train", 40), ("extra", 10), ("slice", 20)):
            labels = gen.integers(0, classes, n)
            images = (labels[:, None, None, None] * 20 + gen.integers(0, 40, (n, 3, 16, 16))).astype(np.uint8)
            arrays[f"task/{task}/{part}/images"], arrays[f"task/{task}/{part}/labels"] = images, labels
    arrays["corpus/glyphs/images"] = gen.integers(0, 255, (12, 3, 16, 16)).astype(np.uint8)
    captions = {"glyphs": [[f"glyph {i}.", f"a glyph number {i}."] for i in range(12)]}
    bpe = root / "bpe.txt.gz"
    import gzip

    with gzip.open(bpe, "wt", encoding="utf-8") as f:
        f.write("\n".join(["bpe header", "t h", "th e</w>", "o f</w>", "p h", "ph o", "pho t", "phot o</w>", "o n</w>"]))
    tok_dir = root / "tok"
    tokenizer.write_clip_tokenizer_files(tok_dir, settings.bpe_merges, bpe_file=bpe)
    cache = root / "cache"
    cache.mkdir()
    np.savez_compressed(cache / IMAGES, **arrays)
    meta = {"settings": {k: getattr(settings, k) for k in CACHED_SETTINGS}, "prompts": prompts,
            "corpus_captions": captions, "tokenizer": {f.name: f.read_text() for f in tok_dir.iterdir()},
            "leaked_pretraining_images": 0}
    (cache / META).write_text(json.dumps(meta))
    return cache


@pytest.mark.slow
def test_a_run_measures_every_stage_and_reuses_its_pretraining(tmp_path, monkeypatch):
    monkeypatch.setitem(measure.ADAMERGING, "steps", 2)
    settings = ZooSettings(**TINY)
    cache = _stand_in_cache(tmp_path, settings)
    first = run_one(cache, settings, "tiny", tmp_path / "tiny.json", log=lambda _: None)
    assert list(first["seconds"]) == ["pretrain", "finetune", "task_arithmetic", "ties", "single", "adamerging"]
    assert json.loads((tmp_path / "tiny.json").read_text())["seconds"] == first["seconds"]
    for row in (first["pretrained"], first["finetuned"], first["ties"], first["adamerging_layer_wise"],
                *first["task_arithmetic"].values()):
        assert set(row) == {"mnist", "emoji"} and all(0 <= a <= 100 for a in row.values())
    assert set(first["cross"]["emoji"]) == {"mnist", "emoji"}
    assert list(first["single_curves"]["mnist"]) == [str(lam) for lam in measure.CURVE_LAMBDAS]
    vision = first["vision_parameters"]
    assert first["float16_mb"] == round(2 * (first["clip_parameters"] + 2 * vision) / 1e6, 1)
    assert first["test_sizes"] == {"mnist": 30, "emoji": 30} and first["chance"]["emoji"] == round(100 / 9, 2)

    longer = ZooSettings(**{**TINY, "finetune_steps": 5, "finetune_anchor": 1.0})  # same pretraining, another fine-tune
    second = run_one(cache, longer, "longer", tmp_path / "longer.json", log=lambda _: None)
    assert second["pretrained_from"].startswith("pretrained-") and second["pretrained"] == first["pretrained"]
    other = run_one(cache, ZooSettings(**{**TINY, "pretrain_steps": 5}), "other", tmp_path / "other.json",
                    log=lambda _: None)
    assert "pretrained_from" not in other

    text = report.write_report([tmp_path], tmp_path / "table.md", tmp_path / "plots", detail="tiny (cpu)")
    assert "| tiny (cpu) | " in text and "sum of the other seven" in text
    one = report.write_report([tmp_path / "longer.json"], None, None)  # a result file works as well as a directory
    assert "| longer (cpu) | " in one and "| tiny (cpu) | " not in one
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"zoo-regime-scale.png", "zoo-regime-cross.png",
                                                               "zoo-regime-curves.png"}


def test_ties_matches_the_engine(tmp_path):
    """The harness's in-memory TIES gives the engine's merge (FusionBench's semantics) on the same vectors."""
    from safetensors.torch import load_file, save_file

    import merge_rs

    gen = torch.Generator().manual_seed(3)
    base = {"a.weight": torch.randn(40, 30, generator=gen), "b.bias": torch.randn(50, generator=gen)}
    vectors = {n: torch.randn(3, *p.shape, generator=gen) * torch.rand(3, *p.shape, generator=gen) for n, p in
               base.items()}
    vectors["b.bias"][:, :10] = 0.0  # nothing kept here
    # kept entries that cancel: the elected sign is 0 and falls back to the majority sign
    vectors["b.bias"][:, 10:15] = torch.tensor([[9.0], [-9.0], [0.0]])
    save_file(base, tmp_path / "base.safetensors")
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"ft{i}.safetensors")
        save_file({n: base[n] + vectors[n][i] for n in base}, paths[-1])
    merge_rs.merge("ties", paths, tmp_path / "out", pretrained=tmp_path / "base.safetensors", scaling_factor=0.3,
                   threshold=20)
    engine = load_file(next((tmp_path / "out").glob("*.safetensors")))
    ours = measure.ties_params(measure.Bench(None, {}, {}, base, {n: (base[n] + v) - base[n] for n, v in
                                                                   vectors.items()}))
    for name in base:
        assert torch.allclose(ours[name], engine[name], atol=1e-6), name


def test_the_anchor_keeps_theta0s_embeddings_on_the_corpus_less_the_tasks_own_slice():
    from tools.zoo.model import new_clip
    from tools.zoo.training import _embeddings

    corpus = {"glyphs": torch.zeros(3, 3, 16, 16, dtype=torch.uint8), "slice_mnist": torch.ones(2, 3, 16, 16,
                                                                                              dtype=torch.uint8),
              "slice_emoji": torch.full((4, 3, 16, 16), 2, dtype=torch.uint8)}
    assert [int(x) for x in anchor_pool(corpus, "mnist")[:, 0, 0, 0]] == [0, 0, 0, 2, 2, 2, 2]

    settings = ZooSettings(**{**TINY, "finetune_steps": 40, "finetune_lr": 3e-3})

    class Tok:
        bos_token_id, eos_token_id, pad_token_id = 0, 1, 2

    torch.manual_seed(0)
    clip = new_clip(settings, Tok(), 16).requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (32, 3, 16, 16), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 4, (32,), generator=gen)
    head = torch.nn.functional.normalize(torch.randn(4, settings.projection_dim, generator=gen), dim=-1)
    anchor = torch.randint(0, 255, (64, 3, 16, 16), dtype=torch.uint8, generator=gen)
    before = _embeddings(clip, clip.vision_model, anchor)

    def drift(weight: float, by_task: tuple[str, ...] = ()) -> float:
        chosen = settings.with_overrides({"finetune_anchor": weight, "finetune_anchor_by_task": by_task})
        tuned = finetune(clip, head, images, labels, chosen, "t", lambda _: None, anchor)
        return float((_embeddings(clip, tuned, anchor) - before).pow(2).sum(-1).mean())

    free, kept = drift(0.0), drift(100.0)
    assert kept < free / 4, (kept, free)
    assert drift(0.0, ("t=100",)) == kept and drift(100.0, ("t=0", "other=100")) == free  # the task's own weight


def test_twemoji_file_names_and_the_framing_of_drawn_emoji():
    from PIL import Image, ImageDraw

    from tools.zoo.emoji_art import framed, twemoji_name
    from tools.zoo.resolution import drawn_at

    assert twemoji_name("\U0001f600") == "1f600.png"
    assert twemoji_name("\u263a\ufe0f") == "263a.png"  # U+FE0F dropped without a ZWJ
    assert twemoji_name("\U0001f3f3\ufe0f\u200d\U0001f308") == "1f3f3-fe0f-200d-1f308.png"  # kept with one
    canvas = Image.new("RGB", (160, 160), "white")
    assert framed(canvas) is None
    ImageDraw.Draw(canvas).rectangle((40, 70, 119, 89), fill="red")  # 80 × 20, off centre vertically
    for side in (32, 64):  # the shipped size, and a larger cache's (`image_size` 64)
        with drawn_at(side):
            image = framed(canvas)
        assert image is not None and image.size == (side, side)
        red = [x for x in range(side) if image.getpixel((x, side // 2))[1] < 128]
        assert len(red) > side * 0.9, "the drawing fills the width"


def test_a_probe_fine_tunes_the_shipped_pretrained_model_and_reports_each_class():
    from importlib import resources

    from tools.zoo.experiment.probe import load_pretrained, probe

    with resources.as_file(resources.files("merge_rs.zoo") / "data") as zoo:
        clip, tokenizer = load_pretrained(zoo)
    assert next(clip.parameters()).dtype == torch.float32, "trained in float32, whatever ships"
    gen = torch.Generator().manual_seed(0)
    labels = [i % 2 for i in range(80)]
    # Class 0 dark, class 1 bright, named the other way round: a pretrained model that knows brightness gets every
    # image wrong, one that does not gets about half; any working fine-tune separates them.
    images = torch.stack([torch.randint(0, 60, (3, 64, 64), generator=gen, dtype=torch.uint8) + 190 * label
                          for label in labels]).to(torch.uint8)
    settings = ZooSettings(finetune_steps=60, finetune_batch=16)
    result = probe(clip, tokenizer, images, labels, ["bright", "dark"], ["a {} image."], settings, test_size=1000,
                   log=lambda _: None)
    assert result["test"] == 20 and result["images"] == 80, result
    assert set(result["fine_tuned_per_class"]) == {"dark", "bright"}
    assert result["fine_tuned"] >= 95 and result["fine_tuned"] > result["pretrained"], result
