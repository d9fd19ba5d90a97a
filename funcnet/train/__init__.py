"""Training: the objective, a compiled step and epoch, early stopping, and ``fit`` built from them.

The objective is the lecture's regularised empirical risk

    J(θ) = (1/N) Σ_n loss(f(x_n; θ), y_n) + λ Ω(θ)

with Ω the L1 or L2 penalty of the weights (biases excluded). Optimizers are
Optax's; :mod:`funcnet.schedules` adds the lecture's decay schedules.

Each piece is a pure function over pytrees, in the style of Optax, usable in a
loop of your own::

    objective = train.make_objective(model, "softmax_cross_entropy_with_integer_labels", lam=1e-4)
    step = jax.jit(train.make_step(objective, optax.adam(1e-3)))
    state = train.TrainState.create(params, optax.adam(1e-3))
    for x, y in batches:
        state, loss = step(state, x, y)

:func:`fit` assembles them: each epoch is one compiled program (the shuffled
minibatch steps as one ``lax.scan``, the evaluation on the training and
validation splits, and the early-stopping bookkeeping); between epochs the host
only records the metrics and runs the hooks (:class:`Hook`: your callback, your
own hooks, the progress bar and the checkpoint of :mod:`funcnet.train.hooks`).

The package, in the order its modules build on each other: ``state`` (the
state types and their checkpoint form), ``steps`` (losses, objective, step,
epoch, metrics), ``hooks``, ``loop`` (``fit``), ``search`` (``fit_many``,
grid and random search) and ``newton_method``.
"""

from funcnet.train.hooks import Hook as Hook
from funcnet.train.loop import FitResult as FitResult, fit as fit
from funcnet.train.newton_method import newton as newton, newton_step as newton_step
from funcnet.train.search import (SearchResult as SearchResult, fit_many as fit_many, grid_search as grid_search,
                                  random_search as random_search)
from funcnet.train.state import EarlyStopping as EarlyStopping, History as History, TrainState as TrainState
from funcnet.train.steps import (LOSSES as LOSSES, evaluate as evaluate, make_epoch as make_epoch,
                                 make_metrics as make_metrics, make_objective as make_objective,
                                 make_step as make_step, mixed_precision as mixed_precision)

__all__ = [
    "LOSSES", "make_objective", "mixed_precision", "TrainState", "make_step", "make_epoch", "make_metrics",
    "EarlyStopping", "History", "FitResult", "fit", "fit_many", "evaluate",
    "newton", "newton_step", "grid_search", "random_search", "SearchResult", "Hook",
]
