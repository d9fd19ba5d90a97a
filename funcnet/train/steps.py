"""The pure pieces of training: named losses, the objective, one step, one epoch, the metrics and ``evaluate``."""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcnet._trees import cast_floats
from funcnet.data import Split
from funcnet.layers import MANUAL, Layer
from funcnet.ops.inputs import static_int
from funcnet.train.state import TrainState, finite_or_none

__all__ = ["LOSSES", "DEPRECATED_LOSSES", "PENALTIES", "DEFAULT_LOSS", "canonical_loss", "loss_function",
           "mixed_precision", "make_objective", "make_step", "make_epoch", "make_metrics", "evaluate"]

#: Loss names accepted wherever a loss is (the CLI's ``--loss``): the op in the model's ``ops.losses`` and
#: whether it classifies. Any callable ``loss(outputs, targets) -> per-example losses`` is accepted too.
LOSSES: Mapping[str, tuple[str, bool]] = {
    "softmax_cross_entropy_with_integer_labels": ("softmax_cross_entropy_with_integer_labels", True),
    "multiclass_svm": ("multiclass_svm_loss", True),
    "squared_error": ("squared_error", False),
    "l2_loss": ("l2_loss", False),
}
#: Old loss names, still accepted for one release (with a DeprecationWarning) -> the name of :data:`LOSSES`.
#: ``"softmax_cross_entropy"`` took integer labels here, unlike ``funcnet.losses.softmax_cross_entropy``.
DEPRECATED_LOSSES: Mapping[str, str] = {"softmax_cross_entropy": "softmax_cross_entropy_with_integer_labels"}
#: The loss of :func:`make_objective`, :func:`make_metrics`, :func:`evaluate` and ``fit`` by default.
DEFAULT_LOSS = "softmax_cross_entropy_with_integer_labels"
PENALTIES = ("l2", "l1")

Loss = Callable[[Any, Any], Any]


def canonical_loss(loss: str | Loss, *, stacklevel: int = 2) -> str | Loss:
    """``loss`` with a deprecated name (:data:`DEPRECATED_LOSSES`) replaced by its name in :data:`LOSSES`.

    Warns (``DeprecationWarning``, ``stacklevel`` frames up) when it replaces one;
    anything else, callables included, is returned as it is.
    """
    if isinstance(loss, str) and loss in DEPRECATED_LOSSES:
        warnings.warn(f"the loss name {loss!r} is deprecated: use {DEPRECATED_LOSSES[loss]!r} (integer labels; "
                      f"funcnet.losses.{loss} takes one-hot targets)", DeprecationWarning, stacklevel=stacklevel + 1)
        return DEPRECATED_LOSSES[loss]
    return loss


def loss_function(loss: str | Loss, model: Layer) -> Loss:
    """The per-example loss ``loss(outputs, targets)``: a name of :data:`LOSSES` (from the model's ops) or a callable."""
    loss = canonical_loss(loss, stacklevel=3)
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; known: {', '.join(LOSSES)}, or pass a callable "
                         "loss(outputs, targets) -> per-example losses")
    return getattr(_ops(model).losses, LOSSES[loss][0])


def _losses(loss_fn: Loss, outputs, targets):
    """``loss_fn(outputs, targets)``, or a TypeError (at trace time) when it gives no floating array."""
    values = loss_fn(outputs, targets)
    if not (hasattr(values, "dtype") and jnp.issubdtype(values.dtype, jnp.floating)):
        name = getattr(loss_fn, "__name__", type(loss_fn).__name__)
        raise TypeError(f"train: the loss {name} returned {values!r:.60} ({type(values).__name__}); a loss "
                        "returns the per-example losses as a float array")
    return values


def _ops(model: Layer):
    return getattr(model, "ops", None) or MANUAL


def check_splits(fn: str, model: Layer, params, splits: Mapping[str, Split]) -> None:
    """Finite inputs (and regression targets), and class labels within the model's outputs, in every split.

    ``splits`` maps the names the errors use (``"training"``, ...) to Splits.
    Inside a compiled program the values are traced and no longer checked: a
    NaN feature or a label past the last output would only show up as a NaN
    loss (or, for a label, an accuracy of 0).
    """
    width = None
    for split_name, split in splits.items():
        for what, values in (("inputs", split.x), ("targets", split.y)):
            values = np.asarray(values)
            if values.size and np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
                bad = ~np.isfinite(values.reshape(len(values), -1))
                raise ValueError(f"{fn}: the {split_name} {what} hold {int(bad.sum())} NaN or infinite values "
                                 f"(first in row {int(np.argmax(bad.any(axis=1)))}); remove or impute them")
        labels = np.asarray(split.y)
        if not labels.size or not np.issubdtype(labels.dtype, np.integer):
            continue
        if width is None:
            width = jax.eval_shape(model.apply, params, jnp.asarray(np.asarray(split.x)[:1])).shape[-1]
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= width:
            raise ValueError(f"{fn}: the {split_name} labels must lie in [0, {width}) for a model with {width} "
                             f"outputs, got values from {lo} to {hi}; give the output layer at least {hi + 1} "
                             "units, or fix the labels")


def check_lam(fn: str, lam: Any) -> None:
    """``lam`` is a finite number >= 0 (a Python, NumPy or 0-d array number), or an error naming ``fn``."""
    number = isinstance(lam, (int, float, np.number)) or (hasattr(lam, "shape") and np.shape(lam) == ()
                                                            and np.issubdtype(np.asarray(lam).dtype, np.number))
    if isinstance(lam, bool) or not number:
        raise TypeError(f"{fn}: lam must be a number, got {lam!r:.60}")
    value = float(lam)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{fn}: lam (the penalty strength) must be finite and >= 0, got {lam!r}")


def mixed_precision(apply: Callable, compute_dtype: Any = None) -> Callable:
    """``apply(params, x, **kw)`` run in ``compute_dtype``: float parameters and inputs are cast on the way in.

    The caller's parameters keep their own dtype (float32 master weights), and
    their gradients come back in it through the cast. ``None`` returns ``apply``.
    """
    if compute_dtype is None:
        return apply

    def cast_apply(params, x, **kwargs):
        return apply(cast_floats(params, compute_dtype), x.astype(compute_dtype), **kwargs)

    return cast_apply


def make_objective(model: Layer, loss: str | Loss = DEFAULT_LOSS, *, penalty: str | None = "l2",
                   lam: Any = 0.0, compute_dtype: Any = None) -> Callable:
    """``objective(params, x, y, key=None) -> (J, outputs)``: mean data loss + λ·penalty.

    The loss (a name of :data:`LOSSES` or any callable ``loss(outputs, targets)``)
    and the penalty (``"l2"``, ``"l1"`` or None) come from the model's op
    namespace (``model.ops``), so a model built on ``funcnet.reference`` trains
    on autodiff throughout. ``lam`` may be traced (``fit_many`` vmaps over it).
    With a ``key`` the model runs in training mode (dropout on). With a
    ``compute_dtype`` (e.g. ``jnp.bfloat16``) the parameters and inputs are cast
    to it for the forward and backward pass (mixed precision): the parameters
    themselves stay in their own dtype (float32 master weights), their
    gradients come back in it through the cast, and the loss is averaged in
    float32.
    """
    loss_fn = loss_function(loss, model)
    if penalty is not None and penalty not in PENALTIES:
        raise ValueError(f"unknown penalty {penalty!r}; known: {', '.join(PENALTIES)}")
    if isinstance(lam, (int, float, np.number)):  # arrays may be traced (fit_many); fit checks its own lam
        check_lam("make_objective", lam)
    penalty_fn = None if penalty is None else getattr(_ops(model).losses, f"{penalty}_penalty")
    apply = mixed_precision(model.apply, compute_dtype)

    def objective(params, x, y, key=None):
        out = apply(params, x, key=key, train=key is not None)
        j = jnp.mean(_losses(loss_fn, out, y).astype(jnp.float32))
        if penalty_fn is not None:
            j = j + lam * penalty_fn(params)
        return j, out

    return objective


def make_step(objective: Callable, optimizer: optax.GradientTransformation, *, has_aux: bool = True) -> Callable:
    """``step(state, x, y, key=None) -> (state, J)``: one gradient step on one minibatch (pure; ``jit`` it).

    ``objective(params, x, y, key)`` returns ``(J, aux)`` (as from
    :func:`make_objective`), or ``J`` alone with ``has_aux=False``. An optimizer
    that takes extra arguments (an ``optax.GradientTransformationExtraArgs``,
    such as :func:`funcnet.curvature.kfac`) gets ``batch=(x, y)`` and ``key``
    (``fold_in(key, 1)``, a stream apart from the objective's dropout; None
    without a key); plain Optax transformations are called as always.
    """
    takes_extra = isinstance(optimizer, optax.GradientTransformationExtraArgs)

    def step(state: TrainState, x, y, key=None):
        value, grads = jax.value_and_grad(objective, has_aux=has_aux)(state.params, x, y, key)
        j = value[0] if has_aux else value
        if takes_extra:
            opt_key = None if key is None else jax.random.fold_in(key, 1)
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params, batch=(x, y), key=opt_key)
        else:
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return TrainState(optax.apply_updates(state.params, updates), opt_state, state.step + 1), j

    return step


def make_epoch(step: Callable, batch_size: int, *, batch_sharding: Any = None) -> Callable:
    """``epoch(state, x, y, key) -> (state, mean J)``: one shuffled pass of ``step`` as one ``lax.scan``.

    ``len(x) // batch_size`` steps (the remainder of the shuffle sits the epoch
    out); step ``i`` gets the key ``fold_in(key, i)``. With ``batch_sharding``
    each minibatch is split over the mesh's data axis. ``x`` and ``y`` may be
    NumPy arrays (as :func:`funcnet.data.load` returns them), jitted or not.
    """
    fn = "train.make_epoch"
    batch_size = static_int(fn, "batch_size", batch_size)

    def epoch(state: TrainState, x, y, key):
        x, y = jnp.asarray(x), jnp.asarray(y)  # a NumPy array indexed by the traced order fails in scan
        n = x.shape[0]
        if y.shape[:1] != (n,):  # a gather past y's end would clamp: the missing rows train on y's last row
            raise ValueError(f"{fn}: x has {n} rows but y has shape {tuple(y.shape)}; give one target (or label) "
                             "per example")
        if batch_size > n:  # no step would run, and the epoch's mean loss would be NaN
            raise ValueError(f"{fn}: batch_size {batch_size} is larger than the {n} examples; use at most {n}")
        steps = n // batch_size
        order = jax.random.permutation(key, n)[: steps * batch_size].reshape(steps, batch_size)

        def body(state, idx_and_i):
            idx, i = idx_and_i
            xb, yb = x[idx], y[idx]
            if batch_sharding is not None:
                xb = jax.lax.with_sharding_constraint(xb, batch_sharding)
                yb = jax.lax.with_sharding_constraint(yb, batch_sharding)
            return step(state, xb, yb, jax.random.fold_in(key, i))

        state, losses = jax.lax.scan(body, state, (order, jnp.arange(steps)))
        return state, jnp.mean(losses)

    return epoch


def make_metrics(model: Layer, loss: str | Loss = DEFAULT_LOSS) -> Callable:
    """``metrics(params, x, y) -> (mean loss, accuracy)``; accuracy is NaN unless ``y`` holds integer labels.

    For evaluation (differentiate :func:`make_objective` to train).
    """
    loss_fn = loss_function(loss, model)

    def metrics(params, x, y):
        out = model.apply(params, x)
        loss_value = jnp.mean(_losses(loss_fn, out, y).astype(jnp.float32))
        accuracy = jnp.mean(jnp.argmax(out, axis=-1) == y) if jnp.issubdtype(y.dtype, jnp.integer) else jnp.nan
        return loss_value, accuracy

    return metrics


def evaluate(model: Layer, params, splits: Split | Mapping[str, Split], loss: str | Loss = DEFAULT_LOSS) -> dict:
    """Mean data loss (no penalty) and accuracy of ``params`` on a split, or on a mapping of named splits.

    A mapping is evaluated in one compiled program: ``{"test": {"loss": ..., "accuracy": ...}, ...}``.
    Accuracy is ``None`` when the targets are not integer class labels.
    """
    metrics = make_metrics(model, canonical_loss(loss))
    one = not isinstance(splits, Mapping)
    named = {"split": splits} if one else dict(splits)
    for name, split in named.items():
        what = "split" if one else f"split {name!r}"
        if not (hasattr(split, "x") and hasattr(split, "y")):
            raise TypeError(f"evaluate: the {what} must be a funcnet.data.Split (x, y), e.g. ds.test, got "
                            f"{split!r:.60}")
        if len(split.x) == 0:
            raise ValueError(f"evaluate: the {what} is empty; its loss and accuracy are undefined")
    check_splits("evaluate", model, params, {"evaluated" if one else repr(k): s for k, s in named.items()})
    arrays = {k: (jnp.asarray(s.x), jnp.asarray(s.y)) for k, s in named.items()}
    values = jax.device_get(jax.jit(lambda p, a: {k: metrics(p, *xy) for k, xy in a.items()})(params, arrays))
    out = {k: {"loss": float(values[k][0]), "accuracy": finite_or_none(values[k][1])} for k in named}
    return out["split"] if one else out
