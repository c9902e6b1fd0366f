import importlib
import subprocess
import sys

import dropblock


def test_every_public_name_resolves_to_the_object_its_module_defines():
    """Each lazily loaded name is the function or class of that name defined in the module _EXPORTS maps
    it to (not a re-export, a module, or another object), callable, and cached on the package after the
    first look-up; __all__ lists exactly the exports and __version__. Breaking it: an _EXPORTS entry
    naming the wrong module (AttributeError, or a re-export's __module__), a __getattr__ that returns
    or caches something else, or a name missing from __all__."""
    assert set(dropblock.__all__) == set(dropblock._EXPORTS) | {"__version__"}
    for name, home in dropblock._EXPORTS.items():
        value = getattr(dropblock, name)
        assert callable(value), name
        assert (value.__module__, value.__name__) == (home, name)
        assert value is getattr(importlib.import_module(home), name)
        assert vars(dropblock)[name] is value  # cached: later look-ups skip __getattr__


def test_importing_the_package_does_not_import_torch():
    code = "import sys, dropblock; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_attribute_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'DropBlock3d'"):
        dropblock.DropBlock3d  # noqa: B018
