"""optax's own loss tests, run on funcnet's functions: drop-in where upstream's tests look.

optax ships its tests in its wheel. Their test classes are collected here, and while
each runs, every optax loss that funcnet shares a name with is funcnet's, in
``optax.losses`` and in the private modules the tests call (``_classification``,
``_regression``, ``_smoothing``; optax's own functions that call one another get
funcnet's too). The classes for losses funcnet does not have (none now) are
left out, so that each test here runs funcnet code. A failure is a difference from
optax that a user of its tests would meet; a deliberate one is marked below with
the reason, as in the README's list.
"""

from __future__ import annotations

import inspect
import unittest

import optax
import pytest
from optax.losses import _classification, _classification_test, _regression, _regression_test, _smoothing
from optax.losses import _smoothing_test

from funcnet import losses

#: Where the tests look the losses up.
PLACES = (optax.losses, _classification, _regression, _smoothing)
#: optax's loss names that funcnet has.
SHARED = sorted(n for n in dir(optax.losses) if not n.startswith("_") and hasattr(losses, n))
#: Test classes of losses funcnet does not have (yet).
NOT_OURS: set[str] = set()

CLASSES = {name: cls for module in (_classification_test, _regression_test, _smoothing_test)
           for name, cls in inspect.getmembers(module, inspect.isclass)
           if issubclass(cls, unittest.TestCase) and cls.__module__ == module.__name__ and name not in NOT_OURS}
globals().update(CLASSES)  # collected by pytest as this module's tests


@pytest.fixture(autouse=True)
def funcnet_in_place_of_optax(monkeypatch):
    for place in PLACES:
        for name in SHARED:
            if hasattr(place, name):
                monkeypatch.setattr(place, name, getattr(losses, name))


def test_every_shared_name_is_substituted_where_the_tests_call_it():
    """Each shared name is funcnet's in optax.losses and in the private module that defines it (the
    tests call ``_classification.<name>``); without the fixture these would be optax's own."""
    assert len(SHARED) >= 23 and len(CLASSES) >= 18
    for name in SHARED:
        assert getattr(optax.losses, name) is getattr(losses, name)
        homes = [p for p in PLACES[1:] if hasattr(p, name)]
        assert homes and all(getattr(p, name) is getattr(losses, name) for p in homes), name
