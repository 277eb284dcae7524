"""Zero-shot heads, evaluation reports, data loading and pools, checked against direct transformers computations on
the offline zoo that ships with merge-rs."""

from __future__ import annotations

import json

import pytest

from conftest import cli

torch = pytest.importorskip("torch")
F = torch.nn.functional

from merge_rs.clip.data import load_split  # noqa: E402
from merge_rs.clip.evaluate import Evaluator, format_table, parse_task_option, prepare_tasks  # noqa: E402
from merge_rs.clip.heads import cached_head, compute_head  # noqa: E402
from merge_rs.clip.models import load_vision_encoder  # noqa: E402
from merge_rs.clip.pool import get_pool, zoo_pool  # noqa: E402
from merge_rs.clip.tasks import TASKS, get_task  # noqa: E402


@pytest.fixture(scope="module")
def zoo():
    return zoo_pool()


@pytest.fixture(scope="module")
def clip(zoo):
    return zoo.load_clip()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MERGE_RS_CACHE", str(tmp_path / "cache"))


def _text_features(model, tokenizer, texts):
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    out = model.get_text_features(**tokens)
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def test_head_matches_a_direct_transformers_computation(clip):
    model, processor = clip
    task = get_task("emoji")  # three templates per class
    with torch.no_grad():
        rows = []
        for name in task.classnames:
            embeds = _text_features(model, processor.tokenizer, [t.format(name) for t in task.templates])
            embeds = embeds / embeds.norm(dim=-1, keepdim=True)
            mean = embeds.mean(dim=0)
            rows.append(mean / mean.norm())
        want = torch.stack(rows)
    got = compute_head(model, processor.tokenizer, task)
    assert got.shape == (len(task.classnames), model.config.projection_dim)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_logits_equal_clip_logits_per_image_for_a_one_template_task(zoo, clip):
    model, processor = clip
    tasks = prepare_tasks([("mnist", None)], zoo, limit=6)
    evaluator = Evaluator(zoo.pretrained_path(), tasks, device="cpu", progress=False)
    images = [tasks[0].data.dataset[i]["image"].convert("RGB") for i in range(6)]
    prompts = get_task("mnist").prompts
    texts = [prompts(c)[0] for c in get_task("mnist").classnames]
    inputs = processor(text=texts, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        want = model(**inputs).logits_per_image
        got = evaluator.logits(model.vision_model, inputs["pixel_values"], "mnist")
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_report_matches_a_hand_computed_evaluation(zoo, clip):
    model, processor = clip
    limit, batch = 10, 4
    tasks = prepare_tasks([("digits", None), ("symbols", None)], zoo, limit=limit)
    evaluator = Evaluator(zoo.pretrained_path(), tasks, device="cpu", batch_size=batch, progress=False)
    vision = zoo.load_vision("digits")
    report = evaluator.evaluate(vision, name="digits model")

    assert list(report) == ["model_info", "digits", "symbols", "average"]
    params = sum(p.numel() for p in vision.parameters())
    assert report["model_info"] == {"trainable_params": params, "all_params": params, "trainable_percentage": 1.0,
                                    "name": "digits model"}
    for item in tasks:
        task = item.task
        head = compute_head(model, processor.tokenizer, task)
        rows = [item.data.dataset[i] for i in range(limit)]
        correct, losses = 0, []
        for start in range(0, limit, batch):
            chunk = rows[start:start + batch]
            pixels = processor.image_processor([r["image"].convert("RGB") for r in chunk], return_tensors="pt")
            labels = torch.tensor([r["label"] for r in chunk])
            with torch.no_grad():
                embeds = model.visual_projection(vision(pixel_values=pixels["pixel_values"]).pooler_output)
                logits = model.logit_scale.exp() * F.normalize(embeds, dim=-1) @ head.T
            losses.append(F.cross_entropy(logits, labels).item())
            correct += int((logits.argmax(-1) == labels).sum())
        assert report[task.name]["accuracy"] == pytest.approx(correct / limit)
        assert report[task.name]["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert report["average"]["accuracy"] == pytest.approx((report["digits"]["accuracy"] +
                                                          report["symbols"]["accuracy"]) / 2)
    assert report["average"]["loss"] == pytest.approx((report["digits"]["loss"] + report["symbols"]["loss"]) / 2)


def test_fine_tuned_models_beat_the_pretrained_one_on_their_own_tasks(zoo):
    tasks = prepare_tasks([(t, None) for t in zoo.tasks], zoo)
    evaluator = Evaluator(zoo.pretrained_path(), tasks, device="cpu", progress=False, cache_pixels=True)
    pretrained = evaluator.evaluate(load_vision_encoder(zoo.pretrained_path()))
    gains = []
    for task in zoo.tasks:  # the shipped zoo: scripts gains least (15.1 points), the average is 33.7
        own = evaluator.evaluate(zoo.load_vision(task))[task]
        assert own["accuracy"] >= pretrained[task]["accuracy"] + 0.15, task
        assert own["loss"] < pretrained[task]["loss"], task
        gains.append(own["accuracy"] - pretrained[task]["accuracy"])
    assert sum(gains) / len(gains) >= 0.30


def test_heads_are_cached_on_disk_and_reused(zoo, clip, tmp_path):
    model, processor = clip
    task = get_task("fashion_mnist")
    first = cached_head(model, processor.tokenizer, task, "fingerprint-a")
    files = list((tmp_path / "cache" / "heads").iterdir())
    assert len(files) == 1 and files[0].name.startswith("fashion_mnist-")
    calls = []
    original = compute_head

    def counting(*args):
        calls.append(1)
        return original(*args)

    import merge_rs.clip.heads as heads

    heads.compute_head, saved = counting, heads.compute_head
    try:
        again = cached_head(model, processor.tokenizer, task, "fingerprint-a")
        cached_head(model, processor.tokenizer, task, "fingerprint-b")  # another model: computed anew
    finally:
        heads.compute_head = saved
    assert torch.equal(first, again) and len(calls) == 1
    assert len(list((tmp_path / "cache" / "heads").iterdir())) == 2


@pytest.mark.slow
def test_cli_eval_with_limit_and_report(zoo, tmp_path):
    report_file = tmp_path / "r" / "report.json"
    out = cli("eval", "symbols", "--pool", "zoo", "--task", "symbols", "--task", "mnist", "--limit", "7",
              "--report", report_file, "--json", "--device", "cpu")
    report = json.loads(out.stdout)
    saved = json.loads(report_file.read_text())
    assert saved.pop("generator").startswith("merge-rs ") and saved == report  # the file carries merge-rs's mark
    assert list(report) == ["model_info", "symbols", "mnist", "average"]
    tasks = prepare_tasks([("symbols", None), ("mnist", None)], zoo, limit=7)
    want = Evaluator(zoo.pretrained_path(), tasks, device="cpu", progress=False).evaluate(zoo.load_vision("symbols"))
    for t in ("symbols", "mnist"):
        assert report[t]["accuracy"] == pytest.approx(want[t]["accuracy"])
        assert report[t]["loss"] == pytest.approx(want[t]["loss"], rel=1e-5)
        assert round(report[t]["accuracy"] * 7) == pytest.approx(report[t]["accuracy"] * 7)

    table = cli("eval", zoo.pretrained_path(), "--clip", zoo.pretrained_path(),
                f"--task=digits={zoo.dataset_source('digits')}", "--limit", "5").stdout
    assert "digits" in table and "accuracy (%)" in table and "loss" in table


@pytest.mark.slow
def test_cli_eval_errors_are_one_line(zoo, tmp_path):
    no_heads = cli("eval", zoo.model_path("mnist"), "--task", "mnist", check=False)
    assert no_heads.returncode == 1 and "give --pool or --clip" in no_heads.stderr
    vision_as_clip = cli("eval", zoo.model_path("mnist"), "--clip", zoo.model_path("mnist"), "--task",
                         f"mnist={zoo.dataset_source('mnist')}", check=False)
    assert vision_as_clip.returncode == 1 and "full CLIP model" in vision_as_clip.stderr
    offline = cli("eval", "pretrained", "--pool", "clip-vit-base-patch32_TA8", check=False)
    assert offline.returncode == 1 and "openai/clip-vit-base-patch32" in offline.stderr
    unknown = cli("eval", "pretrained", "--pool", "zoo", "--task", "imagenet", check=False)
    assert unknown.returncode == 1 and "unknown task 'imagenet'" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_merge_then_eval_in_one_go(tmp_path):
    out = cli("merge", "task_arithmetic", "--pool", "zoo", "--out", tmp_path / "ta", "--eval", "--limit", "20",
              "--json", "--quiet")
    data = json.loads(out.stdout)
    tasks = zoo_pool().tasks
    assert data["method"] == "task_arithmetic" and [m["name"] for m in data["models"]] == tasks
    assert set(data["evaluation"]) == {"model_info", *tasks, "average"}


def test_local_dataset_layouts_load_alike(zoo, tmp_path):
    import datasets

    source = zoo.dataset_source("digits")
    want = load_split(source, "test").head(12)
    ds = want.dataset
    ds.to_parquet(tmp_path / "one.parquet")
    datasets.DatasetDict({"test": ds}).save_to_disk(tmp_path / "dict")
    ds.save_to_disk(tmp_path / "single")
    (tmp_path / "hub" / "data").mkdir(parents=True)
    ds.to_parquet(tmp_path / "hub" / "data" / "test-00000-of-00001.parquet")
    for i, row in enumerate(ds):
        folder = tmp_path / "folder" / "test" / want.label_names[row["label"]]
        folder.mkdir(parents=True, exist_ok=True)
        row["image"].save(folder / f"{i:03}.png")
    for layout in ("one.parquet", "dict", "single", "hub", "folder"):
        got = load_split(tmp_path / layout, "test")
        assert len(got) == 12, layout
        names = got.label_names
        labels = sorted(names[r[got.label_column]] for r in got.dataset) if names else None
        assert labels == sorted(want.label_names[r["label"]] for r in ds), layout
    with pytest.raises(ValueError, match="no split 'train'"):
        load_split(tmp_path / "dict", "train")
    with pytest.raises(FileNotFoundError):
        load_split(tmp_path / "missing", "test")


def test_an_unknown_task_takes_class_names_from_its_dataset(zoo, tmp_path):
    ds = load_split(zoo.dataset_source("fashion_mnist"), "test").head(8).dataset
    ds.to_parquet(tmp_path / "test.parquet")
    task = prepare_tasks([parse_task_option(f"clothes={tmp_path}")])[0].task
    assert task.name == "clothes" and task.classnames[1] == "Trouser"
    assert task.prompts("Bag") == ["a photo of a Bag.", "a photo of the Bag."]
    with pytest.raises(ValueError, match="has 10 classes but dataset"):
        from datasets import ClassLabel

        ds.cast_column("label", ClassLabel(names=[str(i) for i in range(11)])).to_parquet(tmp_path / "b.parquet")
        prepare_tasks([("mnist", str(tmp_path / "b.parquet"))])


def test_pools(tmp_path, zoo):
    ta8 = get_pool("clip-vit-large-patch14_TA8")
    assert ta8.pretrained == "openai/clip-vit-large-patch14"
    assert ta8.models["dtd"] == "tanganke/clip-vit-large-patch14_dtd" and len(ta8.models) == 8
    assert ta8.dataset_source("sun397") == "tanganke/sun397"
    (tmp_path / "pool.json").write_text(json.dumps({
        "pretrained": str(zoo.pretrained_path()),
        "models": {"mnist": str(zoo.model_path("mnist")), "digits": str(zoo.model_path("digits"))},
        "datasets": {"digits": str(zoo.dataset_source("digits"))}}))
    pool = get_pool(tmp_path / "pool.json")
    assert pool.name == "pool" and pool.tasks == ["mnist", "digits"]
    assert pool.model_paths() == [zoo.model_path("mnist"), zoo.model_path("digits")]
    with pytest.raises(ValueError, match="unknown pool"):
        get_pool("no-such-pool")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="needs 'pretrained'"):
        get_pool(tmp_path / "bad.json")


def test_task_registry_has_the_eight_tasks():
    for name in ("sun397", "stanford_cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd"):
        assert TASKS[name].templates and TASKS[name].dataset
    assert len(TASKS["resisc45"].classnames) == 45 and len(TASKS["dtd"].classnames) == 47
    assert len(TASKS["resisc45"].templates) == 18 and len(TASKS["dtd"].templates) == 8
    assert get_task("Cars") is TASKS["stanford_cars"]


def test_format_table_puts_rows_in_order():
    report = {"a": {"accuracy": 0.5, "loss": 1.0}, "average": {"accuracy": 0.5, "loss": 1.0}}
    lines = format_table({"x": report, "loss": report}, ["a"], metrics={"loss": "loss"}).splitlines()
    assert lines[2].split() == ["x", "50.0", "50.0"] and lines[3].split() == ["loss", "1.000", "1.000"]


@pytest.mark.cuda
def test_cuda_evaluation_agrees_with_cpu(zoo):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    tasks = prepare_tasks([("mnist", None)], zoo, limit=200)
    cpu = Evaluator(zoo.pretrained_path(), tasks, device="cpu", progress=False).evaluate(zoo.load_vision("mnist"))
    gpu = Evaluator(zoo.pretrained_path(), tasks, device="cuda", progress=False).evaluate(zoo.load_vision("mnist"))
    assert abs(cpu["mnist"]["accuracy"] - gpu["mnist"]["accuracy"]) <= 0.02
    assert gpu["mnist"]["loss"] == pytest.approx(cpu["mnist"]["loss"], rel=0.05)
