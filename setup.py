"""Builds dropblock's optional C helper; everything else is declared in pyproject.toml.

``optional=True``: where no C compiler is found the install goes on, and dropblock.masks uses its
NumPy/torch fallback (same results, slower on small maps).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("dropblock._cblocks", ["dropblock/_cblocks.c"], optional=True, extra_compile_args=["-O2"]),
    ],
)
