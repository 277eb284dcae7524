"""The offline model zoo that ships with merge-rs (``data/``): a tiny CLIP and its fine-tuned vision encoders,
built from real images. The builder is a development tool outside the package (``tools/zoo`` in the
repository)."""
