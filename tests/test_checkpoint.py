"""Checkpoints: bit-exact round trips, atomic writes, and clear errors for every bad file."""

from __future__ import annotations

import json
import os
import re
import stat
import struct

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import safetensors.numpy
from safetensors import safe_open

from funcnet import checkpoint
from funcnet.checkpoint import Checkpoint, CheckpointError


def raises(*fragments):
    """pytest.raises(CheckpointError) whose one-line message contains every fragment."""
    return pytest.raises(CheckpointError, match="^(?!.*\n)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


def bits(x):
    """dtype, shape and raw bytes: equal only for bit-identical arrays (NaN payloads and -0.0 included)."""
    a = np.asarray(x)
    return a.dtype, a.shape, a.tobytes()


def assert_trees_bit_equal(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert isinstance(g, jax.Array)
        assert bits(g) == bits(w)


def small_params():
    return {
        "dense_0": {"w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3) / 7, "b": jnp.zeros(3, jnp.float32)},
        "dense_1": {"w": jnp.ones((3, 1), jnp.float32), "b": jnp.full((1,), -0.5, jnp.float32)},
    }


def craft(path, tensors, **metadata):
    """Write ``tensors`` with funcnet metadata (``metadata`` overriding the defaults) and a correct digest.

    What an attacker or a buggy tool can produce: the checksum matches, so only the format's rules stop it.
    """
    meta = {"format": "funcnet.checkpoint", "format_version": "1", "step": "0", "config": "{}",
            "dtypes": json.dumps({name: a.dtype.name for name, a in tensors.items()}), "has_opt_state": "false"}
    meta.update(metadata)
    meta["digest"] = checkpoint._digest(meta, tensors)
    safetensors.numpy.save_file(tensors, path, metadata=meta)
    return path


def data_offset(raw: bytes) -> int:
    """Where the tensor bytes start: after the 8-byte header length and the JSON header."""
    (header_len,) = struct.unpack("<Q", raw[:8])
    return 8 + header_len


# --- round trips ------------------------------------------------------------


def test_params_round_trip_bit_exact_across_dtypes(tmp_path):
    with jax.enable_x64(True):
        params = {
            "f32": jnp.array([1.0, -0.0, np.nan, np.inf, 1e-45], jnp.float32),
            "f64": jnp.array([np.pi, -1e-310, np.nan], jnp.float64),
            "bf16": jnp.array([[1.5, -2.25], [3e38, np.nan]], jnp.bfloat16),
            "f8": jnp.array([0.5, -448.0], jnp.float8_e4m3fn),
            "i32": jnp.array([-(2**31), 0, 2**31 - 1], jnp.int32),
            "flag": jnp.array([True, False]),
            "nested": {"scalar": jnp.float32(2.5), "count": jnp.int32(7), "empty": jnp.zeros((0, 4), jnp.float32)},
        }
        path = checkpoint.save(tmp_path / "p.safetensors", params)
        ckpt = checkpoint.restore(path)
    assert isinstance(ckpt, Checkpoint)
    assert_trees_bit_equal(ckpt.params, params)
    assert ckpt.opt_state is None and ckpt.step == 0 and ckpt.config == {}


def test_bfloat16_is_stored_as_its_raw_bits_with_the_true_dtype_in_metadata(tmp_path):
    x = jnp.array([1.0, -3.5, 65280.0], jnp.bfloat16)
    path = checkpoint.save(tmp_path / "p.safetensors", {"x": x})
    with safe_open(path, framework="np") as f:
        stored = f.get_tensor("params/x")
        dtypes = json.loads(f.metadata()["dtypes"])
    assert stored.dtype == np.uint16 and stored.tobytes() == np.asarray(x).tobytes()
    assert dtypes == {"params/x": "bfloat16"}


@pytest.mark.parametrize(
    "optimizer", [optax.adam(1e-2), optax.sgd(1e-2, momentum=0.9)], ids=["adam", "sgd_momentum"]
)
def test_optimizer_state_round_trip_with_like(tmp_path, optimizer):
    params = small_params()
    opt_state = optimizer.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    update = jax.jit(optimizer.update)  # one compile instead of many eager ones: keeps the test fast
    updates, opt_state = update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)

    path = checkpoint.save(tmp_path / "run" / "step_1.safetensors", params, opt_state, step=1)
    template = {"params": params, "opt_state": optimizer.init(params)}
    ckpt = checkpoint.restore(path, like=template)
    assert_trees_bit_equal(ckpt.params, params)
    assert_trees_bit_equal(ckpt.opt_state, opt_state)

    # Abstract templates work too, and training resumes exactly where it stopped.
    abstract = jax.eval_shape(lambda p: {"params": p, "opt_state": optimizer.init(p)}, params)
    again = checkpoint.restore(path, like=abstract)
    assert_trees_bit_equal(again.opt_state, opt_state)
    resumed, _ = update(grads, again.opt_state, again.params)
    expected, _ = update(grads, opt_state, params)
    assert_trees_bit_equal(resumed, expected)


def test_adam_state_is_stored_under_readable_names(tmp_path):
    params = small_params()
    path = checkpoint.save(tmp_path / "c.safetensors", params, optax.adam(1e-3).init(params))
    with safe_open(path, framework="np") as f:
        names = set(f.keys())
    assert {"params/dense_0/w", "opt_state/0/count", "opt_state/0/mu/dense_0/w", "opt_state/0/nu/dense_1/b"} <= names


def test_step_and_config_round_trip(tmp_path):
    config = {"lr": 1e-3, "layers": [64, 64], "name": "mlp", "decay": None, "flags": {"x64": True}}
    path = checkpoint.save(tmp_path / "c.safetensors", small_params(), step=12345, config=config)
    ckpt = checkpoint.restore(path)
    assert ckpt.step == 12345 and isinstance(ckpt.step, int)
    assert ckpt.config == config


def test_a_single_array_and_an_empty_tree_round_trip(tmp_path):
    x = jnp.arange(4.0, dtype=jnp.float32)
    assert bits(checkpoint.restore(checkpoint.save(tmp_path / "a.safetensors", x)).params) == bits(x)
    assert checkpoint.restore(checkpoint.save(tmp_path / "b.safetensors", {})).params == {}


def test_file_is_plain_safetensors_without_pickle(tmp_path):
    path = checkpoint.save(tmp_path / "c.safetensors", small_params(), optax.adam(1e-3).init(small_params()))
    raw = path.read_bytes()
    assert raw[0] != 0x80, "starts with a pickle PROTO opcode"
    assert not raw.startswith(b"PK"), "is a zip archive (torch.save)"
    header = json.loads(raw[8:data_offset(raw)])
    assert header["__metadata__"]["format"] == "funcnet.checkpoint"
    loaded = safetensors.numpy.load_file(path)  # safetensors' own reader, no funcnet involved
    assert np.array_equal(loaded["params/dense_0/w"], np.asarray(small_params()["dense_0"]["w"]))


# --- writing safely ---------------------------------------------------------


def test_overwrite_is_refused_by_default_and_the_old_file_is_untouched(tmp_path):
    path = checkpoint.save(tmp_path / "c.safetensors", small_params(), step=1)
    before = path.read_bytes()
    with raises(str(path), "already exists", "overwrite=True"):
        checkpoint.save(path, {"w": jnp.zeros(2)}, step=2)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c.safetensors"]


def test_overwrite_true_replaces_the_file(tmp_path):
    path = checkpoint.save(tmp_path / "c.safetensors", small_params(), step=1)
    checkpoint.save(path, {"w": jnp.zeros(2)}, step=2, overwrite=True)
    ckpt = checkpoint.restore(path)
    assert ckpt.step == 2 and list(ckpt.params) == ["w"]
    assert sorted(os.listdir(tmp_path)) == ["c.safetensors"]


@pytest.mark.parametrize("failing", ["fsync", "link", "replace"])
def test_an_interrupted_save_leaves_the_previous_checkpoint_and_no_temp_files(tmp_path, monkeypatch, failing):
    path = checkpoint.save(tmp_path / "c.safetensors", small_params(), step=1)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("interrupted mid-save")

    monkeypatch.setattr(checkpoint.os, failing, crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, {"w": jnp.zeros(2)}, step=2, overwrite=True)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c.safetensors"]
    assert checkpoint.restore(path).step == 1


def test_non_json_config_is_refused_naming_the_key(tmp_path):
    path = tmp_path / "c.safetensors"
    with raises(str(path), "config['opt']['lr']", "not JSON-serialisable", "float32"):
        checkpoint.save(path, small_params(), config={"opt": {"lr": np.float32(0.1)}})
    with raises(str(path), "config['layers']", "non-string key 3"):
        checkpoint.save(path, small_params(), config={"layers": {3: "wide"}})
    assert not path.exists()


BAD_SAVES = [
    # id,                   params,                     save keywords,        error fragments
    ("separator_in_a_key",  {"a/b": np.zeros(1)},       {},                   ["'a/b'", "contains '/'"]),
    ("empty_key",           {"": np.zeros(1)},          {},                   ["key ''", "cannot be part of a name"]),
    ("dot_key",             {"a": {".": np.zeros(1)}},  {},                   ["key '.'"]),
    ("dotdot_key",          {"..": np.zeros(1)},        {},                   ["key '..'"]),
    ("negative_step",       {"w": np.zeros(1)},         {"step": -7},         ["step", "non-negative", "-7"]),
    ("config_a_list",       {"w": np.zeros(1)},         {"config": [1, 2]},   ["config must be a dict", "list"]),
    ("structured_dtype",    {"w": np.zeros(2, "V4")},   {},                   ["params/w", "V4", "cannot be stored"]),
    ("string_dtype",        {"w": np.array(["a"])},     {},                   ["params/w", "<U1", "cannot be stored"]),
]


@pytest.mark.parametrize("params, kwargs, fragments", [c[1:] for c in BAD_SAVES], ids=[c[0] for c in BAD_SAVES])
def test_what_a_checkpoint_cannot_hold_is_refused_on_save(tmp_path, params, kwargs, fragments):
    path = tmp_path / "c.safetensors"
    with raises(str(path), *fragments):
        checkpoint.save(path, params, **kwargs)
    assert not path.exists()


def test_big_endian_arrays_are_stored_by_value(tmp_path):
    x = np.array([1.5, -2.0, 3e38], ">f4")
    restored = checkpoint.restore(checkpoint.save(tmp_path / "c.safetensors", {"x": x})).params["x"]
    assert restored.dtype == jnp.float32 and np.array_equal(np.asarray(restored), x)


BAD_TARGETS = [
    # id,                         what is at the path,   overwrite,  error fragments
    ("directory_overwrite",       "directory",           True,       ["is a directory"]),
    ("directory",                 "directory",           False,      ["is a directory"]),
    ("file_as_parent_folder",     "file_parent",         True,       ["cannot create its folder"]),
    ("fifo_overwrite",            "fifo",                True,       ["is not a regular file"]),
]


@pytest.mark.parametrize("what, overwrite, fragments", [c[1:] for c in BAD_TARGETS], ids=[c[0] for c in BAD_TARGETS])
def test_a_path_that_cannot_be_a_checkpoint_file_is_named(tmp_path, what, overwrite, fragments):
    path = tmp_path / "c.safetensors"
    if what == "directory":
        (path / "keep").mkdir(parents=True)
    elif what == "fifo":  # overwrite=True replaced it with a regular file (as root, /dev/null too)
        os.mkfifo(path)
    else:
        (tmp_path / "notes").write_text("mine")
        path = tmp_path / "notes" / "c.safetensors"
    with raises(str(path), *fragments):
        checkpoint.save(path, small_params(), overwrite=overwrite)
    if what == "fifo":
        assert stat.S_ISFIFO(os.lstat(path).st_mode)
    else:
        assert (tmp_path / "c.safetensors" / "keep").is_dir() or (tmp_path / "notes").read_text() == "mine"


# --- reading safely ---------------------------------------------------------


def test_a_flipped_bit_in_the_tensor_data_is_detected(tmp_path):
    path = checkpoint.save(tmp_path / "c.safetensors", small_params())
    raw = bytearray(path.read_bytes())
    raw[data_offset(raw) + 5] ^= 0x01
    path.write_bytes(raw)
    with raises(str(path), "corrupted: checksum mismatch"):
        checkpoint.restore(path)


def test_tampered_metadata_is_detected(tmp_path):
    path = checkpoint.save(tmp_path / "c.safetensors", small_params(), step=7)
    raw = path.read_bytes()
    assert raw.count(b'"step":"7"') == 1
    path.write_bytes(raw.replace(b'"step":"7"', b'"step":"9"'))
    with raises(str(path), "corrupted: checksum mismatch"):
        checkpoint.restore(path)


@pytest.mark.parametrize("keep", [0, 5, 20, -4], ids=["empty", "in_length", "in_header", "in_data"])
def test_a_truncated_file_is_an_error(tmp_path, keep):
    path = checkpoint.save(tmp_path / "c.safetensors", small_params())
    raw = path.read_bytes()
    path.write_bytes(raw[:keep])
    with raises(str(path), "not a readable safetensors file"):
        checkpoint.restore(path)


def test_random_garbage_is_an_error(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(1000))
    with raises(str(path), "not a readable safetensors file"):
        checkpoint.restore(path)


def test_a_safetensors_file_not_written_by_funcnet_is_an_error(tmp_path):
    path = tmp_path / "other.safetensors"
    safetensors.numpy.save_file({"w": np.ones(3, np.float32)}, path)
    with raises(str(path), "not a funcnet checkpoint"):
        checkpoint.restore(path)


F32 = np.ones(2, np.float32)
U32 = np.zeros(2, np.uint32)
DT = '{"params/w": %s}'  # the dtypes metadata of a file holding params/w

CRAFTED = [
    # id, tensors, metadata, error fragments
    ("empty_key_beside_a_tree", {"params/": F32, "params/x/y": F32}, {}, ["'params/'", "empty"]),
    ("root_leaf_beside_a_tree", {"params": F32, "params/x/y": F32}, {}, ["single array and as a tree"]),
    ("dotdot_key", {"params/../w": F32}, {}, ["'params/../w'", "'..'"]),
    ("dot_key", {"params/./w": F32}, {}, ["'params/./w'"]),
    ("empty_inner_key", {"params/a//b": F32}, {}, ["'params/a//b'", "empty"]),
    ("empty_last_key", {"params/a/": F32}, {}, ["'params/a/'", "empty"]),
    ("leaf_inside_a_leaf", {"params/a": F32, "params/a/b": F32}, {}, ["params/a is both"]),
    ("opt_state_not_announced", {"params/w": F32, "opt_state/0/mu": F32}, {}, ["has_opt_state is false"]),
    ("config_a_list", {"params/w": F32}, {"config": "[1, 2]"}, ["config must be a JSON object"]),
    ("config_a_string", {"params/w": F32}, {"config": '"x"'}, ["config must be a JSON object"]),
    ("negative_step", {"params/w": F32}, {"step": "-7"}, ["step must be a non-negative", "'-7'"]),
    ("step_with_a_space", {"params/w": F32}, {"step": " 7"}, ["step must be a non-negative"]),
    ("has_opt_state_a_number", {"params/w": F32}, {"has_opt_state": "1"}, ["has_opt_state must be true or false"]),
    ("void_dtype", {"params/w": U32}, {"dtypes": DT % '"V4"'}, ["params/w", "'V4'", "cannot hold"]),
    ("string_dtype", {"params/w": U32}, {"dtypes": DT % '"<U1"'}, ["params/w", "'<U1'", "cannot hold"]),
    ("big_endian_dtype", {"params/w": F32}, {"dtypes": DT % '">f4"'}, ["params/w", "'>f4'", "cannot hold"]),
    ("ints_passed_off_as_floats", {"params/w": U32}, {"dtypes": DT % '"float32"'}, ["params/w", "stored as uint32"]),
    ("dtype_not_a_string", {"params/w": F32}, {"dtypes": DT % "5"}, ["dtypes must be a JSON object"]),
    ("dtypes_a_list", {"params/w": F32}, {"dtypes": "[]"}, ["dtypes must be a JSON object"]),
    ("dtypes_a_string", {"params/w": F32}, {"dtypes": '"x"'}, ["dtypes must be a JSON object"]),
    ("dtype_missing", {"params/w": F32}, {"dtypes": "{}"}, ["no dtype recorded for params/w"]),
    ("dtype_of_no_tensor", {"params/w": F32}, {"dtypes": DT % '"float32", "params/v": "float32"'}, ["params/v"]),
]


@pytest.mark.parametrize("reader", [checkpoint.restore, checkpoint.read_config], ids=["restore", "read_config"])
@pytest.mark.parametrize("tensors, metadata, fragments", [c[1:] for c in CRAFTED], ids=[c[0] for c in CRAFTED])
def test_a_crafted_file_with_a_matching_checksum_is_refused(tmp_path, reader, tensors, metadata, fragments):
    path = craft(tmp_path / "crafted.safetensors", tensors, **metadata)
    with raises(str(path), *fragments):
        reader(path)


def test_a_missing_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "nowhere" / "c.safetensors"
    with raises(str(path), "no such checkpoint file"):
        checkpoint.restore(path)


def test_opt_state_without_a_template_asks_for_like(tmp_path):
    params = small_params()
    path = checkpoint.save(tmp_path / "c.safetensors", params, optax.adam(1e-3).init(params))
    with raises(str(path), "holds an opt_state", "like="):
        checkpoint.restore(path)


# --- restoring into a template ------------------------------------------------


def test_a_leaf_missing_from_the_checkpoint_is_named(tmp_path):
    params = small_params()
    path = checkpoint.save(tmp_path / "c.safetensors", params)
    bigger = {**params, "dense_2": {"w": jnp.zeros((1, 1), jnp.float32)}}
    with raises(str(path), "params/dense_2/w", "not in the checkpoint"):
        checkpoint.restore(path, like={"params": bigger})


def test_a_leaf_missing_from_the_template_is_named(tmp_path):
    params = small_params()
    path = checkpoint.save(tmp_path / "c.safetensors", params)
    smaller = {**params, "dense_1": {"w": params["dense_1"]["w"]}}
    with raises(str(path), "params/dense_1/b", "not in `like`"):
        checkpoint.restore(path, like={"params": smaller})


def test_a_shape_or_dtype_mismatch_names_the_leaf_and_both_shapes(tmp_path):
    params = small_params()
    path = checkpoint.save(tmp_path / "c.safetensors", params)
    transposed = {**params, "dense_0": {**params["dense_0"], "w": jax.ShapeDtypeStruct((3, 2), jnp.float32)}}
    with raises(str(path), "params/dense_0/w", "(2, 3)", "(3, 2)"):
        checkpoint.restore(path, like={"params": transposed})
    halved = jax.tree.map(lambda x: x.astype(jnp.float16), params)
    with raises(str(path), "params/dense_0/b", "float32", "float16"):
        checkpoint.restore(path, like={"params": halved})


def test_float64_leaves_need_x64_to_restore(tmp_path):
    with jax.enable_x64(True):
        path = checkpoint.save(tmp_path / "c.safetensors", {"w": jnp.ones(2, jnp.float64)})
    with jax.enable_x64(False), raises(str(path), "params/w", "float64", "jax_enable_x64"):
        checkpoint.restore(path)


# --- copying ------------------------------------------------------------------

COPIES = [
    # id,                 source,        what is at the destination,  error fragments (None: the copy works)
    ("to_a_new_path",     "checkpoint",  None,                        None),
    ("onto_a_file",       "checkpoint",  "file",                      ["dst", "already exists"]),
    ("from_garbage",      "garbage",     None,                        ["src", "not a readable safetensors file"]),
    ("from_nowhere",      "missing",     None,                        ["src", "no such checkpoint file"]),
]


@pytest.mark.parametrize("source, before, fragments", [c[1:] for c in COPIES], ids=[c[0] for c in COPIES])
def test_copy_is_byte_for_byte_and_refuses_what_save_refuses(tmp_path, source, before, fragments):
    src, dst = tmp_path / "src", tmp_path / "out" / "dst"
    if source == "checkpoint":
        checkpoint.save(src, small_params(), step=5)
    elif source == "garbage":
        src.write_bytes(b"\x00" * 100)
    if before == "file":
        dst.parent.mkdir()
        dst.write_text("mine")
    if fragments is None:
        assert checkpoint.copy(src, dst) == dst
        assert dst.read_bytes() == src.read_bytes() and checkpoint.read_config(dst) == (5, {})
        return
    with raises(*[str(src) if f == "src" else str(dst) if f == "dst" else f for f in fragments]):
        checkpoint.copy(src, dst)
    assert (dst.read_text() == "mine") if before == "file" else not dst.exists()
