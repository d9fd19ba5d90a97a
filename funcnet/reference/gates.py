"""Autodiff twins of :mod:`funcnet.gates`: the same forward in plain ``jax.numpy``."""

import jax.numpy as jnp

from funcnet.reference import nn

__all__ = ["add", "multiply", "maximum", "matmul", "affine", "activation_affine"]


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
