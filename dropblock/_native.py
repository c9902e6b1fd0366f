"""The optional C helper ``dropblock._cblocks``, or None where it was not compiled (no C compiler at install).

Callers read ``_native.blocks`` at call time, so tests can switch to the NumPy/torch fallback.
"""

try:
    from dropblock import _cblocks as blocks
except ImportError:  # pragma: no cover - depends on the install
    blocks = None
