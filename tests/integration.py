"""Integration tests need torchvision/timm, which do not import beside the main environment's torch.

``require("torchvision")`` imports a package or skips the calling test module; with
``DROPBLOCK_REQUIRE_INTEGRATION=1`` (set by ``.ci/integration``) it fails instead, so a CI run
in which these tests cannot run does not pass quietly.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

REQUIRE = os.environ.get("DROPBLOCK_REQUIRE_INTEGRATION") == "1"


def require(name: str) -> ModuleType:
    """``import name``, or skip this test module (fail it with DROPBLOCK_REQUIRE_INTEGRATION=1)."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # ImportError, or a torchvision built for another torch
        message = f"{name} cannot be imported here ({type(exc).__name__}: {exc})"
        if REQUIRE:
            pytest.fail(f"DROPBLOCK_REQUIRE_INTEGRATION=1 but {message}", pytrace=False)
        pytest.skip(f"{message}; .ci/integration runs these tests", allow_module_level=True)
