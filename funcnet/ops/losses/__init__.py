"""Losses with hand-written rules in both directions (``funcnet.losses``), one module per family.

Like ``optax.losses``, every loss returns per-example values with no reduction:
take ``.mean()`` (or a weighted sum) yourself. Names, signatures (keywords and
defaults included), broadcasting and values follow ``optax.losses`` where Optax
has the loss; each declaration's ``differs`` says where funcnet deliberately
departs from it. Every floating-point argument gets a gradient, the targets
included (soft labels are allowed wherever Optax allows them); integer labels
and boolean masks get none.

Argument checks, promotion and broadcasting happen in the public function,
outside the rule, so that a label broadcast against the logits gets its
gradient summed back to its own shape by the broadcast's transpose. Integer and
boolean inputs are promoted to the default float dtype (Optax raises on integer
logits or predictions). Half-precision inputs are computed in float32 and the
result rounded back.

The families, as Optax lays them out: :mod:`.regression`, :mod:`.binary`,
:mod:`.softmax`, :mod:`.margin`, :mod:`.divergences`, :mod:`.smoothing`,
:mod:`.penalties`, :mod:`.segmentation` (whose Dice losses reduce over classes,
as Optax's do), :mod:`.ranking`, :mod:`.fenchel_young` (a factory: each ``max_fun``
builds its own op), :mod:`.self_supervised`, :mod:`.sequence` (CTC). The fused classifier head is
:mod:`funcnet.ops.fused_head`.
"""

from funcnet.ops.losses import (binary, divergences, fenchel_young, margin, penalties, ranking, regression,
                                segmentation, self_supervised, sequence, smoothing, softmax)
from funcnet.ops.losses.binary import *  # noqa: F401,F403
from funcnet.ops.losses.divergences import *  # noqa: F401,F403
from funcnet.ops.losses.fenchel_young import *  # noqa: F401,F403
from funcnet.ops.losses.margin import *  # noqa: F401,F403
from funcnet.ops.losses.penalties import *  # noqa: F401,F403
from funcnet.ops.losses.ranking import *  # noqa: F401,F403
from funcnet.ops.losses.regression import *  # noqa: F401,F403
from funcnet.ops.losses.segmentation import *  # noqa: F401,F403
from funcnet.ops.losses.self_supervised import *  # noqa: F401,F403
from funcnet.ops.losses.sequence import *  # noqa: F401,F403
from funcnet.ops.losses.smoothing import *  # noqa: F401,F403
from funcnet.ops.losses.softmax import *  # noqa: F401,F403
from funcnet.ops.numerics import LOG_FLOOR  # noqa: F401

#: The families in the order their losses are listed (``funcnet.losses.__all__``, the docs, the registry).
FAMILIES = (regression, binary, softmax, margin, divergences, penalties, smoothing, segmentation, ranking,
            fenchel_young, self_supervised, sequence)

__all__ = [name for family in FAMILIES for name in family.__all__] + ["LOG_FLOOR"]
