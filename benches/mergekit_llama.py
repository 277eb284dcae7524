"""mergekit configs as mergekit users run them: bfloat16 Llama-shaped checkpoints (16 layers, width 1024, GQA,
245 M parameters, 490 MB each), a TIES config with ``dtype: bfloat16`` and a passthrough frankenmerge (``slices``),
each through ``merge-rs run`` and ``mergekit-yaml`` (the test extra's mergekit 0.1.5), page cache warm, medians of
``--reps`` runs. Also checks that both tools wrote the same bits.

    .venv/bin/python benches/mergekit_llama.py --reps 3

Prints a markdown table and writes benches/mergekit_llama.json. The checkpoints are random, generated once under
benches/.data/llama-bf16/.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from pathlib import Path

import yaml

from run import OUT, Result, repeat
from workloads import DATA

HERE = Path(__file__).parent
ROOT = DATA / "llama-bf16"
BIN = Path(sys.executable).parent
LAYERS = 16


def make_models(names: list[str]) -> list[Path]:
    """A base and fine-tuned copies (the base plus noise), each a transformers Llama directory in bfloat16."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=LAYERS,
                         num_attention_heads=16, num_key_value_heads=4, tie_word_embeddings=False,
                         architectures=["LlamaForCausalLM"])
    shapes = {"model.embed_tokens.weight": (32000, 1024), "lm_head.weight": (32000, 1024),
              "model.norm.weight": (1024,)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (1024, 1024), p + "self_attn.k_proj.weight": (256, 1024),
                       p + "self_attn.v_proj.weight": (256, 1024), p + "self_attn.o_proj.weight": (1024, 1024),
                       p + "mlp.gate_proj.weight": (2816, 1024), p + "mlp.up_proj.weight": (2816, 1024),
                       p + "mlp.down_proj.weight": (1024, 2816), p + "input_layernorm.weight": (1024,),
                       p + "post_attention_layernorm.weight": (1024,)})
    paths = [ROOT / name for name in names]
    if all((p / "model.safetensors").exists() for p in paths):
        for path in paths:
            config.save_pretrained(path)
        return paths
    generator = torch.Generator().manual_seed(0)
    base = {k: (0.02 * torch.randn(s, generator=generator)).to(torch.bfloat16) for k, s in shapes.items()}
    for i, path in enumerate(paths):
        path.mkdir(parents=True, exist_ok=True)
        tensors = base if i == 0 else {k: (v.float() + 0.002 * torch.randn(v.shape, generator=generator))
                                       .to(torch.bfloat16) for k, v in base.items()}
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
        config.save_pretrained(path)
    return paths


def configs(paths: list[Path]) -> dict[str, dict]:
    base, a, b, c = (str(p) for p in paths)
    return {
        "ties_bf16": {"merge_method": "ties", "base_model": base, "dtype": "bfloat16",
                      "models": [{"model": m, "parameters": {"weight": w, "density": 0.5}}
                                 for m, w in ((a, 1.0), (b, 0.7), (c, 0.5))]},
        "frankenmerge": {"merge_method": "passthrough", "dtype": "bfloat16",
                         "slices": [{"sources": [{"model": a, "layer_range": [0, 12]}]},
                                    {"sources": [{"model": b, "layer_range": [4, 16]}]}]},
    }


def same_bits(ours: Path, theirs: Path) -> bool:
    from safetensors.torch import load_file

    def tensors(root: Path) -> dict:
        out: dict = {}
        for f in sorted(root.glob("*.safetensors")):
            out.update(load_file(f))
        return out

    a, b = tensors(ours), tensors(theirs)
    return sorted(a) == sorted(b) and all(a[k].dtype == b[k].dtype and a[k].equal(b[k]) for k in b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    paths = make_models(["base", "a", "b", "c"])
    OUT.mkdir(parents=True, exist_ok=True)
    rows, identical = [], {}
    for name, config in configs(paths).items():
        path = OUT / f"{name}.yml"
        path.write_text(yaml.safe_dump(config))
        ours, theirs = OUT / f"merge-rs-{name}", OUT / f"mergekit-{name}"
        for target in (ours, theirs):
            shutil.rmtree(target, ignore_errors=True)
        rows.append(repeat(Result(name, "merge-rs", "run"), [str(BIN / "merge-rs"), "run", str(path), "--out",
                                                            str(ours), "--quiet"], args.reps, out=ours, warmup=True))
        rows.append(repeat(Result(name, "mergekit", "mergekit-yaml"),
                           [str(BIN / "mergekit-yaml"), str(path), str(theirs), "--no-copy-tokenizer"], args.reps,
                           out=theirs))
        # one more run of each, kept, to compare the bits
        repeat(Result(name, "merge-rs", "kept"), [str(BIN / "merge-rs"), "run", str(path), "--out", str(ours),
                                                  "--quiet"], 1)
        repeat(Result(name, "mergekit", "kept"), [str(BIN / "mergekit-yaml"), str(path), str(theirs),
                                                  "--no-copy-tokenizer"], 1)
        identical[name] = same_bits(ours, theirs)
        shutil.rmtree(ours), shutil.rmtree(theirs)
    lines = ["| config | tool | wall (s) | runs (s) | peak RSS (MB) | same bits as mergekit |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        runs = ", ".join(f"{w:.2f}" for w in r.walls)
        same = ("yes" if identical[r.workload] else "no") if r.tool == "merge-rs" else ""
        lines.append(f"| {r.workload} | {r.tool} | {r.wall:.2f} | {runs} | {max(r.rss_mb):.0f} | {same} |")
    print("\n".join(lines))
    record = {"machine": platform.platform(), "cores": len(__import__("os").sched_getaffinity(0)),
              "rows": [{"config": r.workload, "tool": r.tool, "walls": r.walls, "rss_mb": r.rss_mb} for r in rows],
              "identical": identical}
    (HERE / "mergekit_llama.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
