"""RegMean (Jin et al., ICLR 2023) as FusionBench computes it for CLIP.

For every ``nn.Linear`` of the vision encoder, each fine-tuned model's Gram matrix Gᵢ = XᵢᵀXᵢ of the layer's
inputs is averaged over all tokens of its task's first N (256) training images (batches of 32); off-diagonal
entries are scaled by α (0.95 for CLIP). Each linear weight is solved as Wᵀ = (Σᵢ Gᵢ)⁻¹ Σᵢ Gᵢ Wᵢᵀ; every other
parameter (biases, norms, embeddings) is the plain average. Only the running sums Σ Gᵢ and Σ Gᵢ Wᵢᵀ are kept, so
memory does not grow with the number of models. The solve runs in float64.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from ..clip.evaluate import Evaluator, TaskData, prepare_tasks
from ..clip.pool import ModelPool
from .batches import first_examples
from ..output import atomic_output
from .memory import peak_cuda_mb, peak_rss_mb
from .method import LearnedMethod, Option
from .result import LearnedMerge


def input_grams(vision: Any, evaluator: Evaluator, item: TaskData, batch_size: int = 32) -> dict[str, Any]:
    """Module name → mean of xxᵀ over every input token of every ``nn.Linear`` (float32, CPU)."""
    import torch

    sums: dict[str, Any] = {}
    counts: dict[str, int] = {}

    def hook(name: str):
        def record(module, inputs, output):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()
            gram = (x.T @ x).cpu()
            sums[name] = sums[name] + gram if name in sums else gram
            counts[name] = counts.get(name, 0) + x.shape[0]
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in vision.named_modules() if isinstance(m, torch.nn.Linear)]
    try:
        with torch.no_grad():
            for pixels, _ in first_examples(item, evaluator.image_processor, batch_size):
                vision(pixel_values=pixels.to(evaluator.device))
    finally:
        for h in handles:
            h.remove()
    return {n: sums[n] / counts[n] for n in sums}


def reduce_off_diagonal(gram: Any, alpha: float) -> Any:
    import torch

    scale = torch.full_like(gram, alpha)
    scale.fill_diagonal_(1.0)
    return gram * scale


def regmean(pool: ModelPool, out: Path, *, examples: int = 256, batch_size: int = 32, alpha: float = 0.95,
            device: str = "auto", overwrite: bool = False, log: Callable[[str], None] = lambda _: None
            ) -> LearnedMerge:
    """Merge the pool's models with RegMean into ``out`` (a ``CLIPVisionModel`` directory, written atomically
    after the engine's output checks, which run before any work)."""
    started = time.perf_counter()
    with atomic_output(out, pool.input_paths(), overwrite) as temp:
        tasks = prepare_tasks([(t, None) for t in pool.tasks], pool, split="train", limit=examples)
        evaluator = Evaluator(pool.pretrained_path(), tasks, device=device, progress=False)
        model, layers = _solve(pool, tasks, evaluator, batch_size, alpha, log)
        model.save_pretrained(temp)
    return LearnedMerge("regmean", out, list(pool.tasks), time.perf_counter() - started, peak_rss_mb(),
                        peak_cuda_mb(evaluator.device),
                        details={"examples": examples, "batch_size": batch_size, "alpha": alpha,
                                 "linear_layers": layers})


def _solve(pool: ModelPool, tasks: list[TaskData], evaluator: Evaluator, batch_size: int, alpha: float,
           log: Callable[[str], None]) -> tuple[Any, int]:
    """The merged vision model: each linear layer solved from the summed Gram matrices, the rest averaged."""
    import torch

    gram_sum: dict[str, Any] = {}
    gram_weight_sum: dict[str, Any] = {}
    param_sum: dict[str, Any] = {}
    skeleton = None
    for item in tasks:
        vision = pool.load_vision(item.task.name).to(evaluator.device).eval()
        grams = input_grams(vision, evaluator, item, batch_size)
        params = {n: p.detach().cpu().double() for n, p in vision.named_parameters()}
        for module, gram in grams.items():
            g = reduce_off_diagonal(gram.double(), alpha)
            weight = params[f"{module}.weight"]
            gram_sum[module] = gram_sum.get(module, 0) + g
            gram_weight_sum[module] = gram_weight_sum.get(module, 0) + g @ weight.T
        for name, p in params.items():
            param_sum[name] = param_sum.get(name, 0) + p
        log(f"RegMean Gram matrices of the {item.task.name} model: {len(grams)} linear layers, "
            f"{len(item.data)} examples")
        skeleton = vision.cpu()
        del grams, params
    merged = {n: (s / len(tasks)) for n, s in param_sum.items()}
    for module in gram_sum:
        merged[f"{module}.weight"] = torch.linalg.solve(gram_sum[module], gram_weight_sum[module]).T
    skeleton.load_state_dict({n: t.float().contiguous() for n, t in merged.items()}, strict=False)
    return skeleton, len(gram_sum)


METHOD = LearnedMethod(
    name="regmean",
    summary="RegMean: each linear layer solved from the models' input Gram matrices; other parameters averaged.",
    options=(
        Option("examples", "int", 256, "Training images per task for the Gram matrices.", minimum=1),
        Option("batch_size", "int", 32, "Batch size of the Gram computation.", flag="--gram-batch-size", minimum=1),
        Option("alpha", "float", 0.95, "Scale of the Gram matrices' off-diagonal entries.", minimum=0, maximum=1),
    ),
    run=lambda pool, out, ctx, **o: regmean(pool, out, device=ctx.device, overwrite=ctx.overwrite, log=ctx.log, **o),
    demo_rows={"regmean": {}},
    uses_engine=False,
)
