"""Small pytree helpers shared by the checker, the training loop and checkpoints."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.tree_util import DictKey, FlattenedIndexKey, GetAttrKey, SequenceKey


def cast_floats(tree: Any, dtype: Any) -> Any:
    """``tree`` with every floating leaf cast to ``dtype``; other leaves (integer labels) unchanged."""

    def cast(leaf):
        leaf = jnp.asarray(leaf)
        return leaf.astype(dtype) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf

    return jax.tree.map(cast, tree)


def entry_name(entry: Any) -> str:
    """One step of a key path as a string: a dict key, a list index or an attribute name."""
    if isinstance(entry, DictKey):
        return str(entry.key)
    if isinstance(entry, SequenceKey):
        return str(entry.idx)
    if isinstance(entry, GetAttrKey):
        return entry.name
    if isinstance(entry, FlattenedIndexKey):
        return str(entry.key)
    return str(entry)


def path_name(key_path: tuple) -> str:
    """``a/b/c`` for the key path ``(a, b, c)`` of ``jax.tree_util.tree_flatten_with_path``."""
    return "/".join(entry_name(entry) for entry in key_path)
