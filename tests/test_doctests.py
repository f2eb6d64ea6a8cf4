"""The examples in calix's docstrings run as written (``>>>`` lines not marked
``# doctest: +SKIP``): one test per module, in CI with the rest of the suite."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import warnings

import pytest

import calix

MODULES = sorted(m.name for m in pkgutil.walk_packages(calix.__path__, "calix."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS
                                 | doctest.NORMALIZE_WHITESPACE, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"


def test_the_docstrings_hold_examples():
    # about 130 examples run above; a collector that found none would pass silently
    finder = doctest.DocTestFinder()
    examples = sum(len(t.examples) for n in MODULES
                   for t in finder.find(importlib.import_module(n)))
    assert examples >= 100, examples
