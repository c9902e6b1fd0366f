import subprocess
import sys

import dropblock


def test_every_public_name_resolves():
    for name in dropblock.__all__:
        assert getattr(dropblock, name) is not None, name


def test_importing_the_package_does_not_import_torch():
    code = "import sys, dropblock; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_attribute_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'DropBlock3d'"):
        dropblock.DropBlock3d  # noqa: B018
