"""The sandbox's tests need strict isolation wherever `unshare` or `bwrap` exists: a failed probe fails them."""

import shutil

import pytest

from tandem.sandbox import isolation


@pytest.fixture(scope="session")
def strict():
    """Skip only on a machine with neither tool; where one exists, strict isolation must work."""
    if shutil.which("unshare") is None and shutil.which("bwrap") is None:
        pytest.skip("neither unshare nor bwrap is installed: strict isolation cannot be tested here")
    assert isolation() == "strict", f"unshare or bwrap is installed, yet strict isolation failed its probe ({isolation()})"
