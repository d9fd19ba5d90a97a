"""The programs built on the library: the ``funcnet`` command line and what only it uses.

* :mod:`funcnet.apps.cli`: ``funcnet train``, ``funcnet gradcheck``, ``funcnet bench`` (``python -m funcnet``);
* :mod:`funcnet.apps.run`: run folders, settings and the main job behind ``funcnet train``;
* :mod:`funcnet.apps.bench`: the benchmark behind ``funcnet bench`` (training steps, measurements, mesh scaling,
  report), with :mod:`funcnet.apps.dispatch`, :mod:`funcnet.apps.head` and :mod:`funcnet.apps.remat`;
* :mod:`funcnet.apps.models`: the demo models of ``funcnet gradcheck``;
* :mod:`funcnet.apps.tables`: the text tables the commands print;
* :mod:`funcnet.apps.plotting`: plots without a display;
* :mod:`funcnet.apps.docs`: the generator of the op pages under ``docs/``.

The library (every other module of :mod:`funcnet`) never imports this package;
``tests/test_layout.py`` checks that.
"""
