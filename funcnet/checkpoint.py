"""Save and restore training state as one ``.safetensors`` file, safely.

A checkpoint holds the parameters, optionally an optimizer state, the step and
a JSON config. It is written with :mod:`safetensors` (no pickle, so loading a
file cannot run code) and laid out as:

* one tensor per leaf, named by its path in the tree: ``params/dense_0/w``,
  ``opt_state/0/mu/dense_0/w``;
* header metadata (strings): the format version, ``step``, the ``config`` as
  JSON, the funcnet version, the true dtype of every tensor, and a SHA-256
  digest over all of the metadata and every tensor's name, dtype, shape and
  bytes, so that a flipped bit anywhere is caught on load.

Dtypes that safetensors' numpy reader does not know (bfloat16, the float8
types) are stored as unsigned integers of the same width and viewed back to
their true dtype on load, bit for bit.

Writes are atomic: the file is written to a temporary file in the same
directory, flushed to disk and then renamed onto the target, so an interrupted
save leaves any previous checkpoint as it was.

Example::

    params = model_init(key)
    opt_state = optimizer.init(params)
    checkpoint.save("runs/a/step_100.safetensors", params, opt_state, step=100,
                    config={"lr": 1e-3})
    ckpt = checkpoint.restore("runs/a/step_100.safetensors",
                              like={"params": params, "opt_state": opt_state})
    params, opt_state, step = ckpt.params, ckpt.opt_state, ckpt.step
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import operator
import os
import pathlib
import tempfile
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from safetensors import SafetensorError, safe_open

from funcnet._trees import entry_name

__all__ = ["Checkpoint", "CheckpointError", "save", "restore", "read_config"]

FORMAT = "funcnet.checkpoint"
FORMAT_VERSION = 1

#: Dtypes safetensors' numpy reader returns as themselves; others go as raw unsigned ints.
_NATIVE = frozenset(
    np.dtype(t)
    for t in (bool, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
              np.float16, np.float32, np.float64, np.complex64)
)
_RAW = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_SECTIONS = ("params", "opt_state")


class CheckpointError(ValueError):
    """A checkpoint cannot be written or read; the message names the file and the problem."""


class Checkpoint(NamedTuple):
    """What :func:`restore` returns.

    Attributes:
      params: the parameter pytree, leaves as ``jax.Array``.
      opt_state: the optimizer state, or ``None`` if none was saved.
      step: the training step saved with the checkpoint.
      config: the JSON config saved with the checkpoint (``{}`` if none).
    """

    params: Any
    opt_state: Any
    step: int
    config: dict


def save(
    path: str | os.PathLike,
    params: Any,
    opt_state: Any = None,
    *,
    step: int = 0,
    config: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> pathlib.Path:
    """Write ``params`` (and ``opt_state``) to one safetensors file, atomically.

    Args:
      path: the file to write; missing parent directories are created.
      params: a pytree of arrays (``jax.Array``, numpy arrays or scalars).
      opt_state: an optional second pytree, e.g. from ``optimizer.init(params)``.
      step: the training step, an integer.
      config: a JSON-serialisable dict with string keys (tuples come back as lists).
      overwrite: replace an existing file at ``path``; by default an existing
        file is an error and is left untouched.

    Returns:
      ``path`` as a :class:`pathlib.Path`.

    Raises:
      CheckpointError: ``path`` exists and ``overwrite`` is false, ``config``
        is not JSON-serialisable, ``step`` is not an integer, a key contains
        ``/``, or a leaf's dtype cannot be stored.
    """
    path = pathlib.Path(path)
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path}: already exists; pass overwrite=True to replace it")
    try:
        step = operator.index(step)
    except TypeError:
        raise CheckpointError(f"{path}: step must be an integer, got {step!r}") from None
    config = {} if config is None else config
    _check_json(path, config, "config")

    tensors, dtypes = {}, {}
    for section, tree in (("params", params), ("opt_state", opt_state)):
        if tree is None:
            continue
        for name, leaf in _flatten(path, tree, section).items():
            tensors[name], dtypes[name] = _to_storable(path, name, _as_numpy(leaf))

    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "step": str(step),
        "config": json.dumps(config, sort_keys=True),
        "dtypes": json.dumps(dtypes, sort_keys=True),
        "has_opt_state": json.dumps(opt_state is not None),
    }
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        metadata["funcnet_version"] = importlib.metadata.version("funcnet")
    metadata["digest"] = _digest(metadata, tensors)
    _write_atomic(path, safetensors.numpy.save(tensors, metadata=metadata))
    return path


def restore(path: str | os.PathLike, like: Mapping[str, Any] | None = None) -> Checkpoint:
    """Read and verify a checkpoint written by :func:`save`.

    Without ``like``, ``params`` comes back as nested dicts rebuilt from the
    saved key paths (list and tuple indices become string keys ``"0"``,
    ``"1"``...). An optimizer state is not a plain dict, so restoring one needs
    a template: ``like={"opt_state": optimizer.init(params)}``.

    Args:
      path: the checkpoint file.
      like: optional templates ``{"params": ..., "opt_state": ...}`` (either
        key may be left out): pytrees of arrays or ``jax.ShapeDtypeStruct``
        whose structure, shapes and dtypes the saved leaves must match; the
        result takes the template's structure.

    Returns:
      A :class:`Checkpoint` whose leaves are ``jax.Array`` of the saved dtype.

    Raises:
      CheckpointError: the file is missing, is not a funcnet safetensors
        checkpoint, is truncated or corrupted (checksum mismatch), holds an
        opt_state but ``like`` has no template for it, or does not match
        ``like`` (a missing or extra leaf, a different shape or dtype).
    """
    path = pathlib.Path(path)
    like = {} if like is None else like
    unknown = sorted(set(like) - set(_SECTIONS))
    if unknown:
        raise CheckpointError(f"{path}: `like` has unknown keys {unknown}; expected 'params' and/or 'opt_state'")
    metadata, tensors = _read_verified(path)
    step, config, dtypes, has_opt_state = _parse_metadata(path, metadata)

    sections = {s: {} for s in _SECTIONS}
    for name, stored in tensors.items():
        section, _, rel = name.partition("/")
        if section not in sections:
            raise CheckpointError(f"{path}: unexpected tensor {name!r}")
        sections[section][rel] = _to_array(path, name, stored, dtypes.get(name))

    if "params" in like:
        params = _fill(path, like["params"], sections["params"], "params")
    else:
        params = _nest(sections["params"])
    if not has_opt_state:
        if "opt_state" in like:
            raise CheckpointError(f"{path}: has no opt_state, but `like` has an opt_state template")
        opt_state = None
    elif "opt_state" not in like:
        raise CheckpointError(
            f"{path}: holds an opt_state; pass a template to restore it, "
            "e.g. like={'params': params, 'opt_state': optimizer.init(params)}"
        )
    else:
        opt_state = _fill(path, like["opt_state"], sections["opt_state"], "opt_state")
    return Checkpoint(params=params, opt_state=opt_state, step=step, config=config)


def read_config(path: str | os.PathLike) -> tuple[int, dict]:
    """``(step, config)`` of a checkpoint, after verifying the whole file; no templates needed."""
    path = pathlib.Path(path)
    step, config, _, _ = _parse_metadata(path, _read_verified(path)[0])
    return step, config


def _parse_metadata(path: pathlib.Path, metadata: Mapping[str, str]) -> tuple[int, dict, dict, bool]:
    try:
        return (int(metadata["step"]), json.loads(metadata["config"]), json.loads(metadata["dtypes"]),
                json.loads(metadata["has_opt_state"]))
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: bad metadata: {_one_line(err)}") from None


# --- writing ---------------------------------------------------------------


def _check_json(path: pathlib.Path, value: Any, where: str) -> None:
    """Raise naming ``where`` (e.g. ``config['opt']['lr']``) if ``value`` would not survive JSON."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(path, item, f"{where}[{i}]")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CheckpointError(f"{path}: {where} has a non-string key {key!r}; JSON keys must be strings")
            _check_json(path, item, f"{where}[{key!r}]")
    else:
        raise CheckpointError(f"{path}: {where} is not JSON-serialisable ({type(value).__name__}: {value!r:.60})")


def _leaf_name(path: pathlib.Path, key_path: tuple, section: str) -> str:
    """``section/a/b/c`` for the key path ``(a, b, c)``; a key may not contain ``/``."""
    parts = [entry_name(entry) for entry in key_path]
    for part in parts:
        if "/" in part:
            raise CheckpointError(f"{path}: key {part!r} in {section} contains '/', which names use as separator")
    return "/".join([section, *parts])


def _flatten(path: pathlib.Path, tree: Any, section: str) -> dict[str, Any]:
    """The leaves of ``tree`` by name (``section/...``), in flattening order."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    flat = {}
    for key_path, leaf in leaves:
        name = _leaf_name(path, key_path, section)
        if name in flat:
            raise CheckpointError(f"{path}: two leaves of {section} have the same name {name!r}")
        flat[name] = leaf
    return flat


def _as_numpy(leaf: Any) -> np.ndarray:
    """``leaf`` as a numpy array; Python scalars take the dtype JAX gives them (float32 without x64)."""
    if isinstance(leaf, (bool, int, float, complex)):
        return np.asarray(jnp.asarray(leaf))
    return np.asarray(leaf)


def _to_storable(path: pathlib.Path, name: str, array: np.ndarray) -> tuple[np.ndarray, str]:
    """``array`` in a dtype safetensors reads back, and the name of its true dtype."""
    array = np.asarray(array, order="C")
    if array.dtype in _NATIVE:
        return array, array.dtype.name
    if array.dtype.itemsize not in _RAW or array.dtype.kind not in "biufcV":
        raise CheckpointError(f"{path}: {name} has dtype {array.dtype}, which cannot be stored")
    return array.view(_RAW[array.dtype.itemsize]), array.dtype.name


def _digest(metadata: Mapping[str, str], tensors: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the metadata (except the digest) and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for key in sorted(metadata):
        if key != "digest":
            h.update(json.dumps([key, metadata[key]]).encode())
    for name in sorted(tensors):
        array = np.asarray(tensors[name], order="C")
        h.update(json.dumps([name, array.dtype.name, list(array.shape)]).encode())
        h.update(array.tobytes())
    return "sha256:" + h.hexdigest()


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, fsync it, then rename it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable; not possible on every platform (Windows).
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# --- reading ---------------------------------------------------------------


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _read_verified(path: pathlib.Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """The metadata and stored tensors of ``path``, after checking the format and the digest."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(path, framework="np") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_one_line(err)})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a funcnet checkpoint (no {FORMAT!r} format in its metadata)")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path}: format version {metadata.get('format_version')!r}; this funcnet reads version {FORMAT_VERSION}"
        )
    if metadata.get("digest") != _digest(metadata, tensors):
        raise CheckpointError(f"{path}: corrupted: checksum mismatch")
    return metadata, tensors


def _to_array(path: pathlib.Path, name: str, stored: np.ndarray, dtype_name: str | None) -> jax.Array:
    """The stored tensor viewed as its true dtype, as a ``jax.Array``."""
    if dtype_name is None:
        raise CheckpointError(f"{path}: no dtype recorded for {name}")
    try:
        dtype = jnp.dtype(dtype_name)
    except TypeError:
        raise CheckpointError(f"{path}: {name} has unknown dtype {dtype_name!r}") from None
    if dtype != stored.dtype:
        if dtype.itemsize != stored.dtype.itemsize:
            raise CheckpointError(f"{path}: {name} is stored as {stored.dtype}, which cannot hold {dtype}")
        stored = stored.view(dtype)
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:
        raise CheckpointError(
            f"{path}: {name} is {dtype}, which JAX turns into {jax.dtypes.canonicalize_dtype(dtype)}; "
            "enable 64-bit types first with jax.config.update('jax_enable_x64', True)"
        )
    return jnp.asarray(stored)


def _nest(flat: Mapping[str, jax.Array]) -> Any:
    """Nested dicts from ``{"a/b": x, "a/c": y}``; a single root leaf (name ``""``) is returned as is."""
    if "" in flat:
        return flat[""]
    tree: dict = {}
    for name, leaf in flat.items():
        *parents, last = name.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = leaf
    return tree


def _names_list(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def _fill(path: pathlib.Path, template: Any, stored: Mapping[str, jax.Array], section: str) -> Any:
    """``template`` with its leaves replaced by the stored ones, after checking names, shapes and dtypes."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    # Names relative to the section, as in ``stored``: "dense_0/w", or "" for a single root leaf.
    names = [_leaf_name(path, key_path, section).partition("/")[2] for key_path, _ in leaves]
    missing = [f"{section}/{n}" for n in names if n not in stored]
    if missing:
        raise CheckpointError(f"{path}: {_names_list(missing)} in `like` but not in the checkpoint")
    extra = sorted(f"{section}/{n}" for n in set(stored) - set(names))
    if extra:
        raise CheckpointError(f"{path}: {_names_list(extra)} in the checkpoint but not in `like`")
    out = []
    for name, (_, leaf) in zip(names, leaves):
        array = stored[name]
        shape, dtype = _spec(leaf)
        if array.shape != shape or array.dtype != dtype:
            raise CheckpointError(
                f"{path}: {section}/{name} has shape {array.shape} dtype {array.dtype} in the checkpoint, "
                f"shape {shape} dtype {dtype} in `like`"
            )
        out.append(array)
    return jax.tree_util.tree_unflatten(treedef, out)


def _spec(leaf: Any) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a template leaf: an array, a ``jax.ShapeDtypeStruct`` or a scalar."""
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        return tuple(leaf.shape), np.dtype(leaf.dtype)
    array = _as_numpy(leaf)
    return array.shape, array.dtype
