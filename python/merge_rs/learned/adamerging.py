"""AdaMerging (Yang et al., ICLR 2024): θ = θ₀ + Σᵢ λᵢτᵢ with one λ per task (task-wise) or per task per parameter
tensor (layer-wise), learned by minimising the Shannon entropy of the merged model's zero-shot predictions on
unlabeled test images of every task.

FusionBench's defaults: λ initialised at 0.3, Adam with lr 1e-3, 16 images per task per step, 1000 steps, the
per-task mean entropies summed into the loss, no clamping. The forward pass is ``torch.func.functional_call`` on
the pretrained encoder with the merged parameters; task vectors are kept stacked in bfloat16 by default (half the
memory of float32; the final merge is exact, in float32, by the Rust engine from the checkpoints).
"""

from __future__ import annotations

import csv
import io
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ..api import DEFAULT_MAX_SHARD_SIZE, merge
from ..clip.evaluate import Evaluator, prepare_tasks
from ..clip.pool import ModelPool
from ..output import check_output
from ..model_card import card_for_call
from .batches import endless_batches
from .memory import peak_cuda_mb, peak_rss_mb
from .method import LearnedMethod, Option
from .result import LearnedMerge
from .task_vectors import TaskVectors
from .weights_file import load_weights, save_weights

MODES = ("task", "layer")


def entropy(logits: Any, eps: float = 1e-8, total: int | None = None) -> Any:
    """Mean Shannon entropy of softmax(logits) over the batch (over ``total`` examples when the batch is one
    rank's share of a larger one)."""
    import torch

    probs = torch.softmax(logits, dim=-1)
    per_example = -(probs * torch.log(probs + eps)).sum(dim=-1)
    return per_example.mean() if total is None else per_example.sum() / total


def adamerging(pool: ModelPool, out: Path, *, mode: str = "layer", steps: int = 1000, lr: float = 1e-3,
               batch_size: int = 16, init: float = 0.3, clamp: bool = False, weights: Path | None = None,
               task_vector_dtype: str = "bfloat16", device: str = "auto", seed: int = 0, threads: int = 0,
               progress: bool = True, overwrite: bool = False, log: Callable[[str], None] = lambda _: None
               ) -> LearnedMerge:
    """Learn the weights (or start from ``weights``; ``steps=0`` skips learning), merge with the Rust engine
    into ``out``, and save ``merging_weights.json`` and ``loss.csv`` there. Under a torch.distributed launch
    every rank takes its share of each batch, the gradients are summed across ranks (so every rank takes the
    single-process step), and rank 0 merges."""
    import torch

    from ..clip import distributed

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)} (got '{mode}')")
    started = time.perf_counter()
    check_output(out, pool.input_paths(), overwrite)
    distributed.init()
    torch.manual_seed(seed)
    tasks = prepare_tasks([(t, None) for t in pool.tasks], pool, split="test")
    evaluator = Evaluator(pool.pretrained_path(), tasks, device=device, progress=False)
    vectors = TaskVectors.from_pool(pool, task_vector_dtype, evaluator.device)
    log(f"task vectors: {len(vectors.tasks)} × {len(vectors.names)} tensors, {vectors.nbytes() / 1e6:.0f} MB "
        f"({task_vector_dtype})")
    shape = (len(pool.tasks),) if mode == "task" else (len(pool.tasks), len(vectors.names))
    start = load_weights(weights, pool.tasks, vectors.names) if weights else None
    lam = torch.tensor(start, dtype=torch.float32) if start is not None else torch.full(shape, float(init))
    if tuple(lam.shape) != shape:
        raise ValueError(f"{weights}: {'layer' if lam.dim() == 2 else 'task'}-wise weights given for "
                         f"{mode}-wise AdaMerging")
    lam = lam.to(evaluator.device).requires_grad_(True)
    losses = _learn(vectors, evaluator, tasks, lam, steps=steps, lr=lr, batch_size=batch_size, clamp=clamp,
                    seed=seed, progress=progress, log=log)
    final = lam.detach().cpu()
    with tempfile.TemporaryDirectory(prefix="merge-rs-adamerging-") as temp:
        weights_path = Path(temp) / "merging_weights.json"
        settings = {"steps": steps, "lr": lr, "batch_size": batch_size, "init": init, "clamp": clamp, "seed": seed}
        save_weights(weights_path, pool.tasks, vectors.names, final, "adamerging", {"settings": settings})
        coefficients = {"coefficients": final.tolist()} if mode == "task" else {"coefficients_file": weights_path}
        files = {"merging_weights.json": weights_path.read_text(), "loss.csv": _losses_csv(losses)}
        saved = {"coefficients": final.tolist()} if mode == "task" else {"coefficients_file": out / weights_path.name}
        card = card_for_call("task_arithmetic", saved, pool.pretrained_path(), pool.model_paths(), None,
                             DEFAULT_MAX_SHARD_SIZE, out,
                             note=f"The coefficients were learned by AdaMerging ({mode}-wise, {steps} steps); "
                                  "`merging_weights.json` and `loss.csv` hold them and the loss curve.")
        if distributed.is_main():
            merge("task_arithmetic", pool.model_paths(), out, pretrained=pool.pretrained_path(), threads=threads,
                  overwrite=overwrite, reads=pool.input_paths(), extra_files=files, model_card=card, **coefficients)
        distributed.barrier()
    return LearnedMerge(f"adamerging_{mode}_wise", out, list(pool.tasks), time.perf_counter() - started,
                        peak_rss_mb(), peak_cuda_mb(evaluator.device), losses,
                        {"weights": str(out / "merging_weights.json"), "losses": str(out / "loss.csv")},
                        {"mode": mode, "task_vector_mb": vectors.nbytes() / 1e6, **settings})


def _learn(vectors: TaskVectors, evaluator: Evaluator, tasks, lam, *, steps: int, lr: float, batch_size: int,
           clamp: bool, seed: int, progress: bool, log: Callable[[str], None]) -> list[float]:
    import sys

    import torch
    from torch.func import functional_call
    from tqdm import tqdm

    from ..clip import distributed

    if steps == 0:
        return []
    rank, world = distributed.rank(), distributed.world()
    streams = {t.task.name: endless_batches(t, evaluator.image_processor, batch_size, seed + i)
               for i, t in enumerate(tasks)}
    optimizer = torch.optim.Adam([lam], lr=lr)
    losses = []
    bar = tqdm(range(steps), desc="adamerging", disable=not (progress and sys.stderr.isatty() and rank == 0),
               file=sys.stderr)
    for step in bar:
        params = vectors.merged(lam)

        def encoder(pixel_values):
            return functional_call(vectors.encoder, params, (), {"pixel_values": pixel_values})

        loss = lam.sum() * 0.0
        for name, stream in streams.items():
            batch = next(stream)
            pixels = batch[rank::world].to(evaluator.device)
            if len(pixels):
                loss = loss + entropy(evaluator.logits(encoder, pixels, name), total=len(batch))
        optimizer.zero_grad()
        loss.backward()
        if world > 1:
            torch.distributed.all_reduce(lam.grad, op=torch.distributed.ReduceOp.SUM)
        optimizer.step()
        if clamp:
            with torch.no_grad():
                lam.clamp_(0.0, 1.0)
        losses.append(distributed.sum_across([loss.item()], evaluator.device)[0])
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if step % 100 == 0 or step == steps - 1:
            log(f"adamerging step {step}: entropy loss {losses[-1]:.4f}")
    return losses


def _losses_csv(losses: list[float]) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["step", "entropy_loss"])
    writer.writerows(enumerate(losses))
    return text.getvalue()


METHOD = LearnedMethod(
    name="adamerging",
    summary="AdaMerging: learn task-wise or layer-wise merging weights by entropy minimisation on unlabeled test "
            "images, then merge with them (weights and loss curve are saved in the output directory).",
    options=(
        Option("mode", "choice", "layer", "One weight per task per parameter tensor (layer) or per task (task).",
               choices=MODES[::-1]),
        Option("steps", "int", 1000, "Adam steps (0: just merge with --weights).", minimum=0),
        Option("lr", "float", 1e-3, "Adam's learning rate."),
        Option("batch_size", "int", 16, "Unlabeled test images per task per step.", flag="--train-batch-size",
               minimum=1),
        Option("init", "float", 0.3, "Initial λ."),
        Option("clamp", "bool", False, "Clamp the weights to [0, 1] after every step."),
        Option("weights", "path", None, "Start from saved weights (a merging_weights.json)."),
        Option("task_vector_dtype", "choice", "bfloat16", "Precision of the task vectors held during learning.",
               choices=("bfloat16", "float16", "float32")),
        Option("seed", "int", 0, "Seed of the batch order."),
    ),
    run=lambda pool, out, ctx, **o: adamerging(pool, out, device=ctx.device, threads=ctx.threads,
                                               progress=ctx.progress, overwrite=ctx.overwrite, log=ctx.log, **o),
    # The demo learns for 200 steps instead of 1000 to stay short.
    demo_rows={"adamerging_task_wise": {"mode": "task", "steps": 200},
               "adamerging_layer_wise": {"mode": "layer", "steps": 200}},
)
