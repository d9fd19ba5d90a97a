"""The gradient checker and `funcnet gradcheck` fail planted wrong rules and pass correct ones."""

import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.registry
from funcnet import cli
from funcnet.gradcheck import check_op, format_table, relative_error
from funcnet.registry import by_name


def planted(base: str, fwd, bwd, **spec_changes):
    """A copy of registry entry ``base`` whose manual op has the given (wrong) rule."""
    f = jax.custom_vjp(lambda *args: fwd(*args)[0])
    f.defvjp(fwd, bwd)
    spec = by_name(base)
    return dataclasses.replace(spec, name=f"{base} (planted)", fn=f, kwargs={}, **spec_changes)


def _sigmoid_fwd(x):
    y = jax.nn.sigmoid(x)
    return y, y


def _sq_fwd(p, t):
    return (p - t) ** 2, (p, t)


def _max_fwd(x, y):
    return jnp.maximum(x, y), (x, y)


def _affine_fwd(x, w, b):
    return x @ w + b, (x, w)


def _prelu_fwd(x, a):
    return jnp.where(x >= 0, x, a * x), (x, a)


PLANTED = {
    "sign flip": planted("sigmoid", _sigmoid_fwd, lambda y, g: (-g * y * (1 - y),)),
    "missing factor 2": planted(
        "squared_error", _sq_fwd, lambda r, g: (g * (r[0] - r[1]), -g * (r[0] - r[1]))),
    "max routed to the wrong input": planted(
        "maximum", _max_fwd,
        lambda r, g: (g * (r[0] < r[1]), g * (r[0] > r[1])),  # same shapes: no reduction needed
        cases=(((5,), (5,)),)),
    "bias gradient not summed over the batch": planted(
        "affine", _affine_fwd,
        lambda r, g: (g @ r[1].T, r[0].reshape(-1, r[0].shape[-1]).T @ g.reshape(-1, g.shape[-1]),
                      g.reshape(-1, g.shape[-1])[0]),
        cases=(((5, 3), (3, 4), (4,)),)),
    "prelu alpha gradient dropped": planted(
        "prelu", _prelu_fwd,
        lambda r, g: (jnp.where(r[0] >= 0, g, r[1] * g), jnp.zeros_like(r[1])),
        cases=(((5,), ()),)),
}


@pytest.mark.parametrize("what", PLANTED)
def test_checker_fails_a_planted_wrong_rule(what):
    result = check_op(PLANTED[what])
    assert not result.passed
    # wrong against both references, in both precisions
    assert set(result.failures) == {f"{d} vs {k}" for d in ("float32", "float64") for k in ("autodiff", "finite_diff")}
    assert all(e > 1e-2 for errs in result.errors.values() for e in errs.values())


def test_finite_differences_catch_a_rule_that_disagrees_with_its_own_forward():
    # backward is tanh's (agrees with the twin) but forward is 2·tanh: only finite differences see it
    spec = planted("tanh", lambda x: (2 * jnp.tanh(x), jnp.tanh(x)), lambda y, g: (g * (1 - y * y),))
    result = check_op(spec)
    assert result.failures == ["float32 vs finite_diff", "float64 vs finite_diff"]


@pytest.mark.parametrize("name", ["tanh", "maximum", "affine", "prelu", "softmax_cross_entropy"])
def test_checker_passes_the_real_rules(name):
    assert check_op(by_name(name)).passed


def test_relative_error():
    a = {"w": np.array([1.0, 2.0]), "b": np.array([0.0])}
    assert relative_error(a, a) == 0.0
    b = {"w": np.array([1.0, 2.2]), "b": np.array([0.0])}
    assert relative_error(a, b) == pytest.approx(0.2 / 2.2)
    assert relative_error(a, {"w": np.array([np.nan, 2.0]), "b": np.array([0.0])}) == float("inf")
    with pytest.raises(ValueError, match="structures differ"):
        relative_error(a, {"w": np.array([1.0]), "b": np.array([0.0])})


def test_table_marks_failures():
    good, bad = check_op(by_name("relu")), check_op(PLANTED["sign flip"])
    table = format_table([good, bad])
    lines = table.splitlines()
    assert lines[2].startswith("relu") and lines[2].endswith("ok")
    assert "FAIL" in lines[3] and "float64 vs finite_diff" in lines[3]
    assert lines[-1].startswith("1/2 ops passed")


def test_cli_passes_real_ops_and_fails_a_planted_one(monkeypatch, capsys):
    assert cli.main(["gradcheck", "--op", "relu", "--op", "softmax"]) == 0
    out = capsys.readouterr().out
    assert "relu" in out and "2/2 ops passed" in out
    monkeypatch.setattr(funcnet.registry, "OPS", funcnet.registry.OPS + (PLANTED["sign flip"],))
    assert cli.main(["gradcheck", "--op", "relu", "--op", "sigmoid (planted)"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_cli_unknown_op_is_one_line_and_nonzero():
    proc = subprocess.run([sys.executable, "-m", "funcnet.cli", "gradcheck", "--op", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unknown op 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_bad_option_is_nonzero_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "funcnet.cli", "gradcheck", "--seed", "x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "invalid int" in proc.stderr


def test_cli_model_section_and_json(capsys):
    assert cli.main(["gradcheck", "--model", "mlp", "--activation", "relu", "--activation", "elu"]) == 0
    out = capsys.readouterr().out
    assert "mlp relu" in out and "mlp elu" in out and "2/2 models passed" in out
    assert cli.main(["gradcheck", "--op", "tanh", "--model", "mlp", "--activation", "tanh", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["passed"] and [r["op"] for r in result["ops"]] == ["tanh"]
    (model,) = result["models"]
    assert model["model"] == "mlp tanh" and {leaf["path"] for leaf in model["leaves"]} >= {"dense_0/w", "dense_2/b"}


def test_cli_fails_a_model_with_a_planted_rule(monkeypatch, capsys):
    from funcnet.gradcheck import models

    real = models.mlp_loss_pair

    def planted_pair(activation, sizes, lam=1e-3):
        init, manual, twin = real(activation, sizes, lam)
        return init, lambda p, x, y: manual(p, x, y) + 0.0 * twin(p, x, y) + jax.lax.stop_gradient(
            jnp.sum(p["dense_0"]["b"])) - jnp.sum(p["dense_0"]["b"]) * 1e-2, twin

    monkeypatch.setattr(models, "mlp_loss_pair", planted_pair)
    assert cli.main(["gradcheck", "--model", "mlp", "--activation", "relu"]) == 1
    out = capsys.readouterr().out
    assert "FAIL: dense_0/b" in out
