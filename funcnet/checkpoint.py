"""Save and restore training state as one ``.safetensors`` file, safely.

A checkpoint holds the parameters, optionally an optimizer state, the step and
a JSON config. It is written with :mod:`safetensors` (no pickle, so loading a
file cannot run code).

The file
--------

* One tensor per leaf, named by its path in the tree: ``params/dense_0/w``,
  ``opt_state/0/mu/dense_0/w``. A tree that is a single array is one tensor
  named ``params`` (or ``opt_state``). Every key along a path is a non-empty
  string other than ``.`` and ``..`` and holds no ``/``; no name is the path
  of another name's subtree (``params/a`` and ``params/a/b`` cannot both be).
* Header metadata, all strings:

  ``format``           ``funcnet.checkpoint``
  ``format_version``   ``1``
  ``step``             a non-negative integer below 2**63 in decimal, e.g. ``100``
  ``config``           a JSON object, e.g. ``{"lr": 0.001}``
  ``dtypes``           a JSON object giving every tensor's true dtype, e.g.
                       ``{"params/w": "bfloat16"}``
  ``has_opt_state``    ``true`` or ``false``
  ``funcnet_version``  the version that wrote the file (informational only)
  ``digest``           ``sha256:<hex>`` over all of the other metadata and
                       every tensor's name, dtype, shape and bytes, so that
                       a flipped bit anywhere is caught on load

* Dtypes: bool, integers, float16/32/64 and complex64 are stored as
  themselves. Other numeric dtypes that safetensors' numpy reader does not
  know (bfloat16, the float8 and int4 types) are stored as unsigned integers
  of the same width and viewed back to their true dtype on load, bit for bit.
  Strings, structured and object arrays and complex128 cannot be stored.

Reading refuses, with :class:`CheckpointError`, any file that breaks one of
these rules, even one whose digest matches (a crafted file), rather than
guess what it means.

Writing
-------

Nothing a user saved is lost, half-written or silently replaced.
:func:`save` and :func:`copy` write the whole file to a temporary file in the
target's folder, give it its permissions (those of a new file, ``0o666``
less the umask, or when replacing a file, that file's), flush it to disk, and
only then give it its name, in one step:

* ``overwrite=False`` (the default): a hard link that fails if the name is
  taken, so of two processes saving to the same new path exactly one
  succeeds and the other gets :class:`CheckpointError`;
* ``overwrite=True``: a rename onto the target, which readers see change
  from the old complete file to the new complete file.

On Linux the temporary file is created unnamed (``O_TMPFILE``), so a process
killed mid-write leaves nothing behind; it is linked in through
``/proc/self/fd``. Where that is not available the temporary file is named
``.<name>.<host>.<pid>.<random>.tmp``, and each save removes such files of its
target that a dead process of the same host left behind. With
``overwrite=True`` an unnamed file gets such a name for the instant between
linking and renaming: the only moment a kill can leave a temporary file,
which the next save removes. On a file system without hard links (FAT, some
network shares) the name is first reserved by creating an empty file
exclusively and the temporary file then renamed onto it; a kill in between
leaves that empty file, which :func:`restore` reports as unreadable.

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
import errno
import hashlib
import importlib.metadata
import json
import math
import operator
import os
import pathlib
import re
import secrets
import shutil
import socket
import stat
from typing import IO, Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from safetensors import SafetensorError, safe_open

from funcnet._trees import entry_name

__all__ = ["Checkpoint", "CheckpointError", "save", "restore", "read_config", "copy"]

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
#: Keys that cannot be a step of a leaf's name.
_BAD_KEYS = frozenset({"", ".", ".."})
_STEP = re.compile(r"0|[1-9][0-9]{0,18}")
#: The largest step: steps are int64 wherever they are counted.
_MAX_STEP = 2**63 - 1
#: What to do when a write fails, by errno.
_REMEDIES = {
    errno.ENOSPC: "free some space, or save elsewhere",
    errno.EDQUOT: "free some of your quota, or save elsewhere",
    errno.EFBIG: "the file is larger than the file-size limit (ulimit -f) or the file system allows; save elsewhere",
    errno.EROFS: "the file system is read-only; save elsewhere",
    errno.EACCES: "the folder is not writable for you; save elsewhere",
}
#: How deeply a config may nest: JSON of more levels is refused by many readers (Python's by recursion).
_MAX_DEPTH = 100
#: ``O_TMPFILE`` where the platform has it (Linux); 0 turns unnamed temporary files off.
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
#: Whether os.link takes directory fds (then it calls linkat, which can follow /proc/self/fd links).
_LINK_AT = os.link in os.supports_dir_fd


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
      step: the training step, a non-negative integer below 2**63 (an int64).
      config: a JSON-serialisable dict with string keys (tuples come back as lists).
      overwrite: replace an existing file at ``path``; by default an existing
        file is an error and is left untouched, even if another process
        creates it while this one is writing.

    Returns:
      ``path`` as a :class:`pathlib.Path`.

    Raises:
      CheckpointError: ``path`` exists and ``overwrite`` is false, or is a
        directory, or a name the file system refuses (too long); ``config`` is
        not a JSON-serialisable dict or nests more than 100 levels; ``step``
        is not a non-negative int64; a key is empty, ``.`` or ``..`` or
        contains ``/``, or a dict's keys cannot be sorted (``0`` and ``'0'``);
        a leaf is a PRNG key or its dtype cannot be stored; or the file cannot
        be written (the message says what to do).
    """
    path = _as_path("save", "path", path)
    _check_flag(path, "overwrite", overwrite)
    try:
        if isinstance(step, (bool, np.bool_)):  # True would be saved as step 1
            raise TypeError
        step = operator.index(step)
    except TypeError:
        raise CheckpointError(f"{path}: step must be an integer, got {step!r}") from None
    if not 0 <= step <= _MAX_STEP:
        raise CheckpointError(f"{path}: step must be a non-negative integer below 2**63 (an int64), got {step}")
    config = {} if config is None else config
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{path}: config must be a dict, got {type(config).__name__}: {config!r:.60}")
    _check_json(path, config, "config")
    _check_target(path, overwrite)

    tensors, dtypes = {}, {}
    for section, tree in (("params", params), ("opt_state", opt_state)):
        if tree is None:
            continue
        for name, leaf in _flatten(path, tree, section).items():
            if hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                raise CheckpointError(f"{path}: {name} is a PRNG key, which is not an array of numbers; save "
                                      "jax.random.key_data(key) and rebuild it with jax.random.wrap_key_data")
            tensors[name], dtypes[name] = _to_storable(path, name, _as_numpy(leaf))

    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "step": str(step),
        "config": json.dumps(dict(config), sort_keys=True),
        "dtypes": json.dumps(dtypes, sort_keys=True),
        "has_opt_state": json.dumps(opt_state is not None),
    }
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        metadata["funcnet_version"] = importlib.metadata.version("funcnet")
    metadata["digest"] = _digest(metadata, tensors)
    data = safetensors.numpy.save(tensors, metadata=metadata)
    _write_atomic(path, lambda f: f.write(data), overwrite=overwrite)
    return path


def copy(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False) -> pathlib.Path:
    """Copy the checkpoint ``src`` to ``dst`` byte for byte, written as safely as by :func:`save`.

    ``src`` is verified first (as by :func:`read_config`); ``dst`` is never
    left half-written, and an existing ``dst`` is replaced only with
    ``overwrite=True``.

    Returns:
      ``dst`` as a :class:`pathlib.Path`.

    Raises:
      CheckpointError: ``src`` is not a valid checkpoint, ``dst`` exists and
        ``overwrite`` is false, or ``dst`` cannot be written.
    """
    src, dst = _as_path("copy", "src", src), _as_path("copy", "dst", dst)
    _check_flag(dst, "overwrite", overwrite)
    _read_checked(src)
    _check_target(dst, overwrite)
    try:
        source = open(src, "rb")
    except OSError as err:
        raise CheckpointError(f"{src}: cannot read ({_one_line(err)})") from None
    with source:
        _write_atomic(dst, lambda f: shutil.copyfileobj(source, f, 1 << 20), overwrite=overwrite)
    return dst


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
        checkpoint, is truncated or corrupted (checksum mismatch), breaks a
        rule of the format (see the module docstring), holds an opt_state but
        ``like`` has no template for it, or does not match ``like`` (a missing
        or extra leaf, a different shape or dtype).
    """
    path = _as_path("restore", "path", path)
    like = {} if like is None else like
    if not isinstance(like, Mapping):
        raise CheckpointError(f"{path}: `like` must be a dict {{'params': ..., 'opt_state': ...}}, "
                              f"got {type(like).__name__}: {like!r:.60}")
    unknown = sorted(set(like) - set(_SECTIONS))
    if unknown:
        raise CheckpointError(f"{path}: `like` has unknown keys {unknown}; expected 'params' and/or 'opt_state'")
    step, config, has_opt_state, sections = _read_checked(path)
    arrays = {s: {rel: _to_jax(path, f"{s}/{rel}".rstrip("/"), a) for rel, a in flat.items()}
              for s, flat in sections.items()}

    if "params" in like:
        params = _fill(path, like["params"], arrays["params"], "params")
    else:
        params = _nest(arrays["params"])
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
        opt_state = _fill(path, like["opt_state"], arrays["opt_state"], "opt_state")
    return Checkpoint(params=params, opt_state=opt_state, step=step, config=config)


def read_config(path: str | os.PathLike) -> tuple[int, dict]:
    """``(step, config)`` of a checkpoint, after verifying the whole file; no templates needed."""
    step, config, _, _ = _read_checked(_as_path("read_config", "path", path))
    return step, config


def _as_path(fn: str, name: str, value: Any) -> pathlib.Path:
    """``value`` (a str, bytes or os.PathLike) as a Path, or an error naming ``fn``: not ``""``, which is the cwd."""
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise CheckpointError(f"funcnet.checkpoint.{fn}: {name} must be a file path, got {value!r:.60}")
    return pathlib.Path(value)


def _check_flag(path: pathlib.Path, name: str, value: Any) -> None:
    """Refuse a flag that is not a bool: ``overwrite="no"`` is truthy and would replace the file."""
    if not isinstance(value, (bool, np.bool_)):
        raise CheckpointError(f"{path}: {name} must be True or False, got {value!r:.60}")


# --- writing ---------------------------------------------------------------


def _check_json(path: pathlib.Path, value: Any, where: str, depth: int = 0) -> None:
    """Raise naming ``where`` (e.g. ``config['opt']['lr']``) if ``value`` would not survive JSON."""
    if depth > _MAX_DEPTH:
        raise CheckpointError(f"{path}: config nests more than {_MAX_DEPTH} levels deep (at {where[:60]}...); "
                              "store a flatter config")
    if isinstance(value, float) and not math.isfinite(value):
        raise CheckpointError(f"{path}: {where} is {value}, which JSON cannot hold; store None or a string instead")
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(path, item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CheckpointError(f"{path}: {where} has a non-string key {key!r}; JSON keys must be strings")
            _check_json(path, item, f"{where}[{key!r}]", depth + 1)
    else:
        raise CheckpointError(f"{path}: {where} is not JSON-serialisable ({type(value).__name__}: {value!r:.60})")


def _check_target(path: pathlib.Path, overwrite: bool) -> None:
    """Refuse early (before any work) a target that is a directory, or that exists without ``overwrite``."""
    _check_name(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory; a checkpoint is a file, e.g. {path / 'checkpoint.safetensors'}")
    if not overwrite and os.path.lexists(path):
        raise CheckpointError(f"{path}: already exists; pass overwrite=True to replace it")
    if os.path.exists(path) and not path.is_file():  # a FIFO, a socket, a device node (/dev/null as root)
        raise CheckpointError(f"{path}: is not a regular file (a pipe, socket or device); overwrite=True replaces "
                              "only a checkpoint file; choose another path")


def _check_name(path: pathlib.Path) -> None:
    """Refuse a path the file system cannot look up (a name too long, a loop of links) with its reason."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as err:
        longest = max(map(len, path.parts), default=0)
        detail = f", a name of {longest} characters" if err.errno == errno.ENAMETOOLONG else ""
        raise CheckpointError(f"{str(path)[:80]}{'...' * (len(str(path)) > 80)}: cannot be used as a checkpoint "
                              f"path ({err.strerror}{detail}); choose a shorter or other path") from None


def _leaf_name(path: pathlib.Path, key_path: tuple, section: str) -> str:
    """``section/a/b/c`` for the key path ``(a, b, c)``; a key may not be empty, ``.`` or ``..`` or contain ``/``."""
    parts = [entry_name(entry) for entry in key_path]
    for part in parts:
        if "/" in part:
            raise CheckpointError(f"{path}: key {part!r} in {section} contains '/', which names use as separator")
        if part in _BAD_KEYS:
            raise CheckpointError(f"{path}: key {part!r} in {section} cannot be part of a name; use another key")
    return "/".join([section, *parts])


def _flatten(path: pathlib.Path, tree: Any, section: str) -> dict[str, Any]:
    """The leaves of ``tree`` by name (``section/...``), in flattening order."""
    try:
        leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    except (TypeError, ValueError) as err:  # JAX sorts a dict's keys, and 0 and "0" do not sort
        raise CheckpointError(f"{path}: {section} has a dict whose keys cannot be sorted, such as 0 and '0' (which "
                              f"would also both be named '0'): use string keys ({_one_line(err)})") from None
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


def _storable(dtype: np.dtype) -> bool:
    """Whether a checkpoint can hold ``dtype``: bool or numeric, native to safetensors or 1 to 8 bytes wide."""
    numeric = dtype == np.bool_ or jnp.issubdtype(dtype, np.number)
    return numeric and (dtype in _NATIVE or dtype.itemsize in _RAW)


def _to_storable(path: pathlib.Path, name: str, array: np.ndarray) -> tuple[np.ndarray, str]:
    """``array`` in a dtype safetensors reads back, and the name of its true dtype."""
    if not array.dtype.isnative:  # big-endian data: store the values, little-endian like everything else
        array = array.astype(array.dtype.newbyteorder("="))
    array = np.asarray(array, order="C")
    if not _storable(array.dtype):
        raise CheckpointError(f"{path}: {name} has dtype {array.dtype}, which cannot be stored")
    if array.dtype in _NATIVE:
        return array, array.dtype.name
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


def _write_atomic(path: pathlib.Path, write: Callable[[IO[bytes]], Any], *, overwrite: bool) -> None:
    """Create ``path`` with the bytes ``write(file)`` writes: complete or not at all (see "Writing" above)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot create its folder ({_one_line(err)})") from None
    _remove_stale_temps(path)
    names: list[pathlib.Path] = []  # named temporary files this call created, removed on any failure
    try:
        fd = _open_temp(path, names)
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, _file_mode(path, overwrite))
            with os.fdopen(fd, "wb", closefd=False) as f:
                write(f)
                f.flush()
                os.fsync(fd)
            _publish(path, fd, names, overwrite)
        finally:
            os.close(fd)
    except BaseException as err:
        for name in names:
            with contextlib.suppress(OSError):
                os.unlink(name)
        if isinstance(err, IsADirectoryError):
            raise CheckpointError(f"{path}: is a directory; a checkpoint is a file") from None
        if isinstance(err, OSError):
            remedy = _REMEDIES.get(err.errno, "save elsewhere")
            raise CheckpointError(f"{path}: cannot write ({_one_line(err)}); {remedy}") from err
        raise
    # Make the new name itself durable; not possible on every platform (Windows).
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _open_temp(path: pathlib.Path, names: list[pathlib.Path]) -> int:
    """A new empty file in ``path``'s folder, open for writing: unnamed where possible, else appended to ``names``."""
    if _O_TMPFILE and os.path.isdir("/proc/self/fd"):
        try:
            return os.open(path.parent, _O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        except OSError as err:  # the kernel or the file system has no O_TMPFILE
            if err.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
    name = _temp_name(path)
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
                 | getattr(os, "O_CLOEXEC", 0), 0o600)
    names.append(name)
    return fd


def _publish(path: pathlib.Path, fd: int, names: list[pathlib.Path], overwrite: bool) -> None:
    """Give the finished temporary file (open as ``fd``; named ``names[0]`` if it has a name) the name ``path``."""
    # An unnamed file is reached through its /proc entry, a named one by its name in the same folder.
    source = names[0].name if names else f"/proc/self/fd/{fd}"
    if overwrite:
        if not names:
            names.append(_temp_name(path))
            _link(source, names[0])
        os.replace(names[0], path)
        names.clear()
        return
    try:
        _link(source, path)  # fails if anything took the name meanwhile, even a moment ago
    except FileExistsError:
        raise CheckpointError(f"{path}: already exists; pass overwrite=True to replace it") from None
    except OSError as err:
        if not names or err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        # No hard links on this file system: reserve the name exclusively, then rename onto the reservation.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise CheckpointError(f"{path}: already exists; pass overwrite=True to replace it") from None
        names.append(path)  # removed again if the rename fails
        os.replace(names[0], path)
        names.clear()
        return
    if names:  # a named temporary file now has its real name too: drop the temporary one
        with contextlib.suppress(OSError):  # the checkpoint is saved; a stray name is swept by a later save
            os.unlink(names[0])
        names.clear()


def _link(source: str, target: pathlib.Path) -> None:
    """Hard-link ``source`` (a name in ``target``'s folder, or a /proc/self/fd path) to the new name ``target``."""
    if not _LINK_AT:  # e.g. Windows, where there is no /proc source either
        os.link(target.with_name(source), target)
        return
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        # With a directory fd Python calls linkat(AT_SYMLINK_FOLLOW), which follows the /proc link to the
        # file; plain link() would try to link the /proc entry itself and fail.
        os.link(source, target.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=True)
    finally:
        os.close(dir_fd)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _temp_name(path: pathlib.Path) -> pathlib.Path:
    """``.<name>.<host>.<pid>.<random>.tmp`` next to ``path``: the owner can be told from the name."""
    return path.with_name(f".{path.name}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _remove_stale_temps(path: pathlib.Path) -> None:
    """Delete temporary files of ``path`` (see :func:`_temp_name`) whose writer, on this host, has died."""
    if os.name != "posix":  # os.kill(pid, 0) is a liveness probe only on POSIX
        return
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{re.escape(_host())}\.([0-9]+)\.[0-9a-f]{{8}}\.tmp")
    with contextlib.suppress(OSError):
        for entry in os.listdir(path.parent):
            match = pattern.fullmatch(entry)
            if match and not _alive(int(match[1])):
                with contextlib.suppress(OSError):
                    os.unlink(path.parent / entry)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: alive
        return True
    return True


def _file_mode(path: pathlib.Path, overwrite: bool) -> int:
    """Permission bits of the new file: those of the file it replaces, else ``0o666`` less the umask."""
    if overwrite:
        with contextlib.suppress(OSError):
            return stat.S_IMODE(os.stat(path).st_mode)
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read from /proc where possible (setting it to read it is not thread-safe)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# --- reading ---------------------------------------------------------------


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _read_verified(path: pathlib.Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """The metadata and stored tensors of ``path``, after checking the format and the digest."""
    _check_name(path)
    if not path.is_file():
        what = ("is a directory, not a checkpoint file" if path.is_dir() else
                "is not a regular file (a pipe, socket or device); give the checkpoint file" if path.exists() else
                "no such checkpoint file")
        raise CheckpointError(f"{path}: {what}")
    try:
        with safe_open(path, framework="np") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, TypeError) as err:
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


def _read_checked(path: pathlib.Path) -> tuple[int, dict, bool, dict[str, dict[str, np.ndarray]]]:
    """``(step, config, has_opt_state, sections)`` of a verified file that keeps every rule of the format.

    ``sections`` maps ``"params"`` and ``"opt_state"`` to ``{relative name: array}`` (name ``""``
    for a tree that is a single array), the arrays viewed as their true dtypes.
    """
    metadata, tensors = _read_verified(path)
    step, config, dtypes, has_opt_state = _parse_metadata(path, metadata, tensors)
    sections: dict[str, dict[str, np.ndarray]] = {s: {} for s in _SECTIONS}
    for name, stored in tensors.items():
        section, rel = _split_name(path, name)
        sections[section][rel] = _as_true_dtype(path, name, stored, dtypes[name])
    for section, flat in sections.items():
        _check_layout(path, section, flat)
    if sections["opt_state"] and not has_opt_state:
        raise CheckpointError(f"{path}: holds opt_state tensors, but its metadata says has_opt_state is false")
    return step, config, has_opt_state, sections


def _bad_metadata(path: pathlib.Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: bad metadata: {what}")


def _json_metadata(path: pathlib.Path, metadata: Mapping[str, str], key: str) -> Any:
    if key not in metadata:
        raise _bad_metadata(path, f"no {key!r}")
    try:
        return json.loads(metadata[key])
    except (ValueError, RecursionError) as err:
        raise _bad_metadata(path, f"{key} is not JSON ({_one_line(err)})") from None


def _parse_metadata(path: pathlib.Path, metadata: Mapping[str, str],
                    tensors: Mapping[str, np.ndarray]) -> tuple[int, dict, dict[str, str], bool]:
    """``(step, config, dtypes, has_opt_state)``, each checked against the format."""
    step = metadata.get("step")
    if step is None or not _STEP.fullmatch(step) or int(step) > _MAX_STEP:
        raise _bad_metadata(path, f"step must be a non-negative integer below 2**63, got {step!r:.60}")
    config = _json_metadata(path, metadata, "config")
    if not isinstance(config, dict):
        raise _bad_metadata(path, f"config must be a JSON object, got {metadata['config']!r:.60}")
    dtypes = _json_metadata(path, metadata, "dtypes")
    if not isinstance(dtypes, dict) or not all(isinstance(v, str) for v in dtypes.values()):
        raise _bad_metadata(path, f"dtypes must be a JSON object of dtype names, got {metadata['dtypes']!r:.60}")
    missing, extra = sorted(set(tensors) - set(dtypes)), sorted(set(dtypes) - set(tensors))
    if missing:
        raise _bad_metadata(path, f"no dtype recorded for {_names_list(missing)}")
    if extra:
        raise _bad_metadata(path, f"dtypes names {_names_list(extra)}, which the file does not hold")
    has_opt_state = _json_metadata(path, metadata, "has_opt_state")
    if not isinstance(has_opt_state, bool):
        raise _bad_metadata(path, f"has_opt_state must be true or false, got {metadata['has_opt_state']!r:.60}")
    return int(step), config, dtypes, has_opt_state


def _split_name(path: pathlib.Path, name: str) -> tuple[str, str]:
    """``("params", "a/b")`` for the tensor ``params/a/b``; ``("params", "")`` for ``params``."""
    section, sep, rel = name.partition("/")
    if section not in _SECTIONS:
        raise CheckpointError(f"{path}: unexpected tensor {name!r}")
    if sep and any(part in _BAD_KEYS for part in rel.split("/")):
        raise CheckpointError(f"{path}: tensor {name!r} has an empty, '.' or '..' key in its name")
    return section, rel


def _check_layout(path: pathlib.Path, section: str, flat: Mapping[str, Any]) -> None:
    """Refuse names that cannot all be leaves of one tree: a root leaf beside others, a leaf inside a leaf."""
    if "" in flat and len(flat) > 1:
        other = next(rel for rel in flat if rel)
        raise CheckpointError(f"{path}: {section} is saved both as a single array and as a tree ({section}/{other})")
    for rel in flat:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in flat:
                raise CheckpointError(f"{path}: {section}/{prefix} is both an array and a subtree ({section}/{rel})")


def _as_true_dtype(path: pathlib.Path, name: str, stored: np.ndarray, dtype_name: str) -> np.ndarray:
    """The stored tensor viewed as its true dtype, after checking it is stored the way :func:`save` stores it."""
    try:
        dtype = np.dtype(jnp.dtype(dtype_name))
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: {name} has unknown dtype {dtype_name!r}") from None
    if dtype.name != dtype_name or not _storable(dtype):
        raise CheckpointError(f"{path}: {name} has dtype {dtype_name!r}, which a checkpoint cannot hold")
    want = dtype if dtype in _NATIVE else np.dtype(_RAW[dtype.itemsize])
    if stored.dtype != want:
        raise CheckpointError(f"{path}: {name} is stored as {stored.dtype}; a {dtype} tensor is stored as {want}")
    return stored if dtype == stored.dtype else stored.view(dtype)


def _to_jax(path: pathlib.Path, name: str, array: np.ndarray) -> jax.Array:
    """``array`` as a ``jax.Array`` of the same dtype, or an error if JAX would change the dtype."""
    canonical = jax.dtypes.canonicalize_dtype(array.dtype)
    if canonical != array.dtype:
        raise CheckpointError(
            f"{path}: {name} is {array.dtype}, which JAX turns into {canonical}; "
            "enable 64-bit types first with jax.config.update('jax_enable_x64', True)"
        )
    return jnp.asarray(array)


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
