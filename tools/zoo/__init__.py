"""The builder of the offline model zoo that ships in ``python/merge_rs/zoo/data``: ``python -m tools.zoo.build
OUT`` from the repository root (needs the ``zoo`` extra and Debian's image packages)."""
