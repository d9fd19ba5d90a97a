"""Autodiff twins of :mod:`funcnet.gates`: the same forward in plain ``jax.numpy``."""

import jax.numpy as jnp

from funcnet.reference import nn

__all__ = ["add", "multiply", "maximum", "matmul", "affine", "activation_affine", "embedding"]


def add(x, y):
    return jnp.add(x, y)


def multiply(x, y):
    return jnp.multiply(x, y)


def maximum(x, y):
    return jnp.maximum(x, y)


def matmul(a, b):
    return jnp.matmul(a, b)


def affine(x, w, b):
    return jnp.matmul(x, w) + b


def activation_affine(z, w, b, activation="relu", **activation_kwargs):
    return affine(getattr(nn, activation)(z, **activation_kwargs), w, b)


def embedding(table, ids):
    # jnp.take wraps negative ids around; funcnet's embedding reads them as out of range (a NaN row), as ids >= rows
    return jnp.take(table, jnp.where(ids < 0, table.shape[0], ids), axis=0, mode="fill", fill_value=jnp.nan)
