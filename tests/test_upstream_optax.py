"""optax's own loss tests, run on funcnet's functions: drop-in where upstream's tests look.

optax ships its tests in its wheel. Their test classes are collected here, and while
each runs, every optax loss that funcnet shares a name with is funcnet's, in
``optax.losses`` and in the private modules the tests call (``_classification``,
``_regression``, ``_segmentation``, ``_smoothing``, ``_ranking``, ``_fenchel_young``, ``_self_supervised``;
optax's own functions that call one another get funcnet's too). The classes for losses funcnet does not have
(none now) are
left out, so that each test here runs funcnet code. A failure is a difference from
optax that a user of its tests would meet (none is expected: every one passes).
"""

from __future__ import annotations

import importlib
import inspect
import sys
import unittest

import optax
import pytest
from optax.losses import _classification, _classification_test, _fenchel_young, _fenchel_young_test, _ranking
from optax.losses import _regression, _regression_test, _segmentation, _segmentation_test, _self_supervised
from optax.losses import _self_supervised_test, _smoothing, _smoothing_test

from funcnet import losses


def _imported_with_funcnet_losses(name: str, place, names: tuple[str, ...]):
    """The test module ``name``, imported while ``place``'s ``names`` are funcnet's: ``_ranking_test`` takes
    its loss as a ``parameterized`` argument, bound when its classes are defined, not looked up at run time."""
    assert name not in sys.modules, f"{name} was imported before funcnet's losses were put in place"
    saved = {n: getattr(place, n) for n in names}
    try:
        for n in names:
            setattr(place, n, getattr(losses, n))
        return importlib.import_module(name)
    finally:
        for n, f in saved.items():
            setattr(place, n, f)


_ranking_test = _imported_with_funcnet_losses("optax.losses._ranking_test", _ranking, ("ranking_softmax_loss",))

#: Where the tests look the losses up.
PLACES = (optax.losses, _classification, _regression, _segmentation, _smoothing, _ranking, _fenchel_young,
          _self_supervised)
#: optax's loss names that funcnet has.
SHARED = sorted(n for n in dir(optax.losses) if not n.startswith("_") and hasattr(losses, n))
#: Test classes of losses funcnet does not have (yet).
NOT_OURS: set[str] = set()

CLASSES = {name: cls for module in (_classification_test, _regression_test, _segmentation_test, _smoothing_test,
                                    _ranking_test, _fenchel_young_test, _self_supervised_test)
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
    assert len(SHARED) >= 26 and len(CLASSES) >= 19
    for name in SHARED:
        assert getattr(optax.losses, name) is getattr(losses, name)
        homes = [p for p in PLACES[1:] if hasattr(p, name)]
        assert homes and all(getattr(p, name) is getattr(losses, name) for p in homes), name


def test_optaxs_ranking_tests_run_funcnets_loss(monkeypatch):
    """The planted fault: funcnet's ranking loss made wrong (its reduction plus 1) fails optax's ranking test,
    which holds the loss it was given when its module was imported."""
    import funcnet.ops.losses.ranking as ranking

    reduce = ranking._safe_reduce
    monkeypatch.setattr(ranking, "_safe_reduce", lambda *a: reduce(*a) + 1.0)
    result = unittest.TextTestRunner(stream=open("/dev/null", "w")).run(  # noqa: SIM115
        unittest.defaultTestLoader.loadTestsFromName("test_computes_reduced_loss0", CLASSES["RankingLossesTest"]))
    assert result.testsRun == 1 and len(result.failures) == 1
