"""The manual op namespace: ``gates``, ``nn`` and ``losses`` with the hand-written rules, as layers' ``ops=`` takes it.

``funcnet.manual`` and ``funcnet.reference`` (the autodiff twins) hold the same
three namespaces under the same names, so a network is built on either with
``ops=``. ``ops=funcnet`` names the same ops as ``ops=funcnet.manual``.
"""

from funcnet import gates, losses, nn

__all__ = ["gates", "nn", "losses"]
