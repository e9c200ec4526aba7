"""The Lua scripts (`*.lua`, `includes/*.lua`) as package data of `meter.lua`.

pyproject.toml maps this folder to the package `meter.lua` (setuptools `package-dir`), so
meter/scripts.py finds the scripts through importlib.resources both in an editable install
and in a wheel, while the folder stays at the repository root."""
