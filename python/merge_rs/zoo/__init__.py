"""The offline model zoo: a tiny CLIP and four fine-tuned vision encoders built from real images (``data/``), and
the code that builds them (``sources``, ``tokenizer``, ``build``)."""
