"""Fisher merging (Matena & Raffel, NeurIPS 2022) as FusionBench computes it for CLIP.

Per fine-tuned model, the diagonal Fisher is estimated on the first N (256) training images of its task, in batches
of 32: for each batch the gradient of Σ_examples Σ_classes √p·log p (p the model's own predicted distribution,
detached) is squared and accumulated, then divided by the number of examples. With normalisation each model's
scaling coefficient is multiplied by (1/‖Fᵢ‖) / Σⱼ (1/‖Fⱼ‖) (‖·‖ the L2 norm over all its Fisher values; ε added
to the norms as FusionBench does). The Fisher tensors are written as safetensors and the weighted merge
θ = Σ cᵢ(Fᵢ+ε)θᵢ / Σ cᵢ(Fᵢ+ε) runs in the Rust engine. A LoRA adapter in the pool is the vision encoder it stands
for (θ₀ + ΔW) throughout: its Fisher is taken over every parameter of that encoder, as of a full fine-tune, and
the encoder is written to a temporary directory for the merge.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ..api import merge
from ..clip.evaluate import Evaluator, TaskData, prepare_tasks
from ..clip.pool import ModelPool
from ..output import atomic_output, check_output
from .batches import first_examples
from .memory import peak_cuda_mb, peak_rss_mb
from .method import LearnedMethod, Option
from .result import LearnedMerge


def diagonal_fisher(vision: Any, evaluator: Evaluator, item: TaskData, batch_size: int = 32) -> dict[str, Any]:
    """Fᵢ for every trainable parameter of ``vision`` (float32, on the CPU)."""
    import torch

    params = {n: p for n, p in vision.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros(p.shape, dtype=torch.float32) for n, p in params.items()}
    seen = 0
    for pixels, _ in first_examples(item, evaluator.image_processor, batch_size):
        logits = evaluator.logits(vision, pixels.to(evaluator.device), item.task.name)
        probs = torch.softmax(logits, dim=-1).detach()
        objective = (torch.sqrt(probs) * torch.log_softmax(logits, dim=-1)).sum()
        vision.zero_grad(set_to_none=True)
        objective.backward()
        for name, p in params.items():
            if p.grad is not None:
                fisher[name] += p.grad.detach().float().cpu() ** 2
        seen += len(pixels)
    if seen == 0:
        raise ValueError(f"task '{item.task.name}': no training examples for the Fisher")
    return {n: f / seen for n, f in fisher.items()}


def fisher_norm(fisher: dict[str, Any]) -> float:
    return math.sqrt(sum(float((f.double() ** 2).sum()) for f in fisher.values()))


def model_coefficients(norms: list[float], scaling: list[float] | None, normalize: bool, epsilon: float
                       ) -> list[float]:
    scaling = scaling or [1.0] * len(norms)
    if not normalize:
        return list(scaling)
    inverse = [1.0 / (n + epsilon) for n in norms]
    total = sum(inverse)
    return [s * i / total for s, i in zip(scaling, inverse)]


def fisher_merging(pool: ModelPool, out: Path, *, examples: int = 256, batch_size: int = 32, normalize: bool = True,
                   epsilon: float = 1e-6, scaling: list[float] | None = None, fisher_dir: Path | None = None,
                   device: str = "auto", threads: int = 0, overwrite: bool = False,
                   log: Callable[[str], None] = lambda _: None) -> LearnedMerge:
    """Compute each model's Fisher, write them to ``fisher_dir`` (kept) or a temporary directory, and merge."""
    from safetensors.torch import save_file

    from ..lora import is_adapter

    started = time.perf_counter()
    check_output(out, pool.input_paths(), overwrite)
    tasks = prepare_tasks([(t, None) for t in pool.tasks], pool, split="train", limit=examples)
    evaluator = Evaluator(pool.pretrained_path(), tasks, device=device, progress=False)
    with ExitStack() as stack:
        directory = (stack.enter_context(atomic_output(fisher_dir, pool.input_paths(), overwrite)) if fisher_dir
                     else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="merge-rs-fisher-"))))
        dense = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="merge-rs-fisher-models-")))
        files, norms, models = [], [], []
        for item in tasks:
            vision = pool.load_vision(item.task.name).to(evaluator.device)
            models.append(pool.model_path(item.task.name))
            if is_adapter(models[-1]):  # merged as the encoder its Fisher was taken on
                models[-1] = dense / item.task.name
                vision.save_pretrained(models[-1])
            fisher = diagonal_fisher(vision, evaluator, item, batch_size)
            norms.append(fisher_norm(fisher))
            files.append(directory / f"fisher_{item.task.name}.safetensors")
            save_file({n: f.contiguous() for n, f in fisher.items()}, str(files[-1]),
                      metadata={"task": item.task.name, "examples": str(len(item.data))})
            log(f"Fisher of the {item.task.name} model: {len(item.data)} examples, norm {norms[-1]:.4g}")
            del vision, fisher
        weights = model_coefficients(norms, scaling, normalize, epsilon)
        report = merge("fisher_merging", models, out, fisher=files, weights=weights, epsilon=epsilon,
                       threads=threads, overwrite=overwrite, reads=pool.input_paths(), model_card=False)
    return LearnedMerge("fisher_merging", out, list(pool.tasks), time.perf_counter() - started, peak_rss_mb(),
                        peak_cuda_mb(evaluator.device),
                        files={"fisher": str(fisher_dir)} if fisher_dir else {},
                        details={"examples": examples, "batch_size": batch_size, "normalize": normalize,
                                 "epsilon": epsilon, "fisher_norms": norms, "model_coefficients": weights,
                                 "merge_seconds": report.seconds})


METHOD = LearnedMethod(
    name="fisher",
    summary="Fisher merging: diagonal Fisher of each fine-tuned model on its task's training images, then the "
            "Fisher-weighted average (in the Rust engine).",
    options=(
        Option("examples", "int", 256, "Training images per task for the Fisher.", minimum=1),
        Option("batch_size", "int", 32, "Batch size of the Fisher computation.", flag="--fisher-batch-size",
               minimum=1),
        Option("normalize", "bool", True, "Weight each model by the inverse of its Fisher's global L2 norm."),
        Option("epsilon", "float", 1e-6, "Added to every Fisher value."),
        Option("scaling", "floats", None, "Per-model scaling coefficients (comma-separated; default 1)."),
        Option("fisher_dir", "output", None, "Keep the Fisher safetensors here (a new directory)."),
    ),
    run=lambda pool, out, ctx, **o: fisher_merging(pool, out, device=ctx.device, threads=ctx.threads,
                                                   overwrite=ctx.overwrite, log=ctx.log, **o),
    demo_rows={"fisher_merging": {}},
)
