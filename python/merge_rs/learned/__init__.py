"""Merging methods that learn from data with torch: AdaMerging (task-wise and layer-wise), Fisher merging and
RegMean. Each takes a model pool, computes what it needs on the pool's tasks, and writes a merged
``CLIPVisionModel`` directory; the elementwise merges run in the Rust engine."""
