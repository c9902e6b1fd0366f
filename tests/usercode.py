"""What users bring: their own model code, which the tests load as ``module:function`` and ``file.py:function``.

``write_code(folder)`` writes ``tinynet.py`` (with a neighbour module it imports, ``helpers.py``) and
``broken_import.py``; the ``code_dir`` fixture (conftest) puts that folder on ``sys.path``. ``Tiny``
maps (1, 3, S, S) to (1, 10) logits through ``stem`` (8 x S/2 x S/2) and ``block`` (16 x S/4 x S/4).
``Touch`` is what a hostile checkpoint could hold.
"""

import pathlib
import textwrap
from pathlib import Path

MODEL_CODE = textwrap.dedent('''
    import torch
    from torch import nn
    from helpers import width   # a neighbour module: the file's folder is on sys.path

    class Tiny(nn.Module):
        def __init__(self, classes=10):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU())
            self.block = nn.Sequential(nn.Conv2d(width, 16, 3, 2, 1), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, classes)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.block(self.stem(x))), 1))

    def build():
        torch.manual_seed(0)
        return Tiny()

    def build_1000():
        torch.manual_seed(0)
        return Tiny(1000)

    def boom():
        raise RuntimeError("no GPU here")

    def not_a_model():
        return 42

    def features_only():
        torch.manual_seed(0)
        return Tiny().stem
''')


def write_code(folder: Path) -> Path:
    """The model files in ``folder``; returns the path of ``tinynet.py``."""
    (folder / "helpers.py").write_text("width = 8\n")
    (folder / "tinynet.py").write_text(MODEL_CODE)
    (folder / "broken_import.py").write_text("import torch\nraise ValueError('bad config')\n")
    return folder / "tinynet.py"


class Touch:
    """Unpickling this creates a file: what a malicious checkpoint could do."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))
