"""``python -m merge_rs.cli``."""

from . import main

main()
