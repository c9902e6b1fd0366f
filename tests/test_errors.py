"""dropblock.errors.one_line: any exception as one line."""

from dropblock.errors import one_line


def test_one_line_collapses_names_and_cuts():
    exc = RuntimeError("Error(s) in loading state_dict:\n\tMissing key(s): a, b")
    assert one_line(exc) == "Error(s) in loading state_dict: Missing key(s): a, b"
    assert one_line(exc, with_type=True).startswith("RuntimeError: Error(s)")
    assert one_line(KeyError()) == "KeyError" and one_line(KeyError(), with_type=True) == "KeyError"
    cut = one_line(exc, with_type=True, limit=20)
    assert cut == "RuntimeError: Err..." and len(cut) == 20
    assert one_line(ValueError("short"), limit=20) == "short"
