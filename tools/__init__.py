"""Development tools of the merge-rs repository (not part of the installed package)."""
