"""`make bench` / `python -m bench`: SPEC §10 items 1-3 on a private Redis, side by side."""
