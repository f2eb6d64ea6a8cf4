import os
import tempfile

import pytest

# Zoo models trained by the tests go to a private cache, never the user's.
os.environ.setdefault("CALIX_CACHE", tempfile.mkdtemp(prefix="calix-test-cache-"))


@pytest.fixture(scope="session")
def digits():
    from calix import data

    return data.load("digits", seed=0)
