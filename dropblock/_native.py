"""The optional C helper ``dropblock._cblocks``, or None where it was not compiled (no C compiler at install).

Whether a call uses it is ``dropblock.backends``' decision (``DROPBLOCK_BACKEND``: auto, c, numpy, ...).
"""

try:
    from dropblock import _cblocks as blocks
except ImportError:  # pragma: no cover - depends on the install
    blocks = None
