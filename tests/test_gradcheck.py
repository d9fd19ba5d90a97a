"""The op checker and `funcnet gradcheck` fail planted wrong rules and pass correct ones.

Each column is shown to catch a fault planted into exactly one rule: the
reverse rule (against autodiff and finite differences), the forward rule
(against the twin's ``jax.jvp``), the two rules against each other (the
adjoint column) and the documented kink conventions.
"""

import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.registry
from funcnet import tolerances
from funcnet.apps import cli
from funcnet.apps.tables import op_table
from funcnet.gradcheck import check_gradients, check_op, relative_error
from funcnet.ops.binding import Op
from funcnet.registry import by_name

REVERSE = {f"{d} vs {k}" for d in ("float32", "float64") for k in ("autodiff", "finite_diff")}
FORWARD = {"float32 fwd vs twin", "float64 fwd vs twin"}


def planted(base: str, value, vjp, jvp, save=None, **spec_changes):
    """A copy of registry entry ``base`` whose manual op is a :class:`Op` with the given (possibly wrong) rules.

    ``None`` while ``base`` is not in the registry. The copy has no kinks unless given.
    """
    if base not in {spec.name for spec in funcnet.registry.OPS}:
        return None
    rule = Op(f"planted_{base}", value=value, save=save, vjp=vjp, jvp=jvp)
    changes = {"kinks": (), **spec_changes}
    return dataclasses.replace(by_name(base), name=f"{base} (planted)", fn=lambda *a: rule(*a), kwargs={}, **changes)


def _t(t, like):
    """A tangent the rule received as ``None`` (a symbolic zero) as zeros."""
    return jnp.zeros_like(like) if t is None else t


def _sigmoid_save(x):
    y = jax.nn.sigmoid(x)
    return y, y


def _tanh_save(x):
    y = jnp.tanh(x)
    return y, y


def _affine_jvp(r, tx, tw, tb):
    x, w, b = r
    return _t(tx, x) @ w + x @ _t(tw, w) + _t(tb, b)


def _prelu_jvp(r, tx, ta):
    x, a = r
    return jnp.where(x >= 0, _t(tx, x), a * _t(tx, x) + _t(ta, a) * x)


# a wrong reverse rule, the forward rule right
PLANTED = {
    "sign flip": planted(
        "sigmoid", jax.nn.sigmoid, save=_sigmoid_save,
        vjp=lambda y, g: (-g * y * (1 - y),), jvp=lambda y, t: t * y * (1 - y)),
    "missing factor 2": planted(
        "squared_error", lambda p, t: (p - t) ** 2,
        vjp=lambda r, g: (g * (r[0] - r[1]), -g * (r[0] - r[1])),
        jvp=lambda r, tp, tt: 2 * (r[0] - r[1]) * (_t(tp, r[0]) - _t(tt, r[1]))),
    "max routed to the wrong input": planted(
        "maximum", jnp.maximum,
        vjp=lambda r, g: (g * (r[0] < r[1]), g * (r[0] > r[1])),  # same shapes: no reduction needed
        jvp=lambda r, tx, ty: jnp.where(r[0] >= r[1], _t(tx, r[0]), _t(ty, r[1])),
        cases=(((5,), (5,)),)),
    "bias gradient not summed over the batch": planted(
        "affine", lambda x, w, b: x @ w + b,
        vjp=lambda r, g: (g @ r[1].T, r[0].reshape(-1, r[0].shape[-1]).T @ g.reshape(-1, g.shape[-1]),
                          g.reshape(-1, g.shape[-1])[0]),
        jvp=_affine_jvp, cases=(((5, 3), (3, 4), (4,)),)),
    "prelu alpha gradient dropped": planted(
        "prelu", lambda x, a: jnp.where(x >= 0, x, a * x),
        vjp=lambda r, g: (jnp.where(r[0] >= 0, g, r[1] * g), jnp.zeros_like(r[1])),
        jvp=_prelu_jvp, cases=(((5,), ()),)),
}

# a wrong forward rule, the reverse rule right
PLANTED_FORWARD = {
    "tanh: 1 - y instead of 1 - y²": planted(
        "tanh", jnp.tanh, save=_tanh_save, vjp=lambda y, g: (g * (1 - y * y),), jvp=lambda y, t: t * (1 - y)),
    "affine: bias tangent dropped": planted(
        "affine", lambda x, w, b: x @ w + b,
        vjp=lambda r, g: (g @ r[1].T, r[0].reshape(-1, r[0].shape[-1]).T @ g.reshape(-1, g.shape[-1]),
                          g.reshape(-1, g.shape[-1]).sum(0)),
        jvp=lambda r, tx, tw, tb: _t(tx, r[0]) @ r[1] + r[0] @ _t(tw, r[1]),
        cases=(((5, 3), (3, 4), (4,)),)),
}


def _relu_with_gradient_1_at_0():
    """ReLU whose rules use ``y >= 0``: gradient 1 at x = 0, where funcnet documents 0."""
    relu = by_name("relu")
    wrong = Op("relu", value=relu.forms[0].value, save=lambda x: (jnp.maximum(x, 0), x),
                 vjp=lambda x, g: (jnp.where(x >= 0, g, 0.0),), jvp=lambda x, t: jnp.where(x >= 0, t, 0.0))
    return dataclasses.replace(relu, name="relu (planted kink)", fn=lambda x: wrong(x))


def _present(spec):
    if spec is None:
        pytest.skip("the op it is planted into is not in funcnet.registry.OPS yet")
    return spec


#: Planted reverse faults whose error has no derivative of its own: second-order checks cannot see them.
LINEAR_FAULTS = {"max routed to the wrong input", "bias gradient not summed over the batch"}


@pytest.mark.parametrize("what", PLANTED)
def test_checker_fails_a_planted_wrong_reverse_rule(what):
    result = check_op(_present(PLANTED[what]))
    assert not result.passed
    # wrong against both references, in both precisions; the forward rule is right, and disagrees with it;
    # second order differentiates the reverse rule, so it fails too where the wrong part has a derivative
    # (a wrong routing of a max or a missing sum over the batch is piecewise constant or linear)
    assert set(result.failures) - {"float64 second order"} == REVERSE | {"float64 adjoint"}
    assert ("float64 second order" in result.failures) == (what not in LINEAR_FAULTS)
    assert all(e > 1e-2 for errs in result.errors.values() for e in errs.values())
    assert all(e <= tolerances.tolerance("autodiff", d).rtol for d, e in result.forward.items())


@pytest.mark.parametrize("what", PLANTED_FORWARD)
def test_checker_fails_a_planted_wrong_forward_rule(what):
    result = check_op(_present(PLANTED_FORWARD[what]))
    # only the forward columns fail: against the twin's jvp in both precisions, and against the reverse rule
    # (second order is forward over the reverse rule: it passes)
    assert set(result.failures) == FORWARD | {"float64 adjoint"}
    assert all(e > 1e-2 for e in result.forward.values()) and result.adjoint["float64"] > 1e-2
    assert all(e <= tolerances.tolerance(k, d).rtol for d, errs in result.errors.items() for k, e in errs.items())


def test_an_op_without_a_forward_rule_fails_the_forward_columns():
    f = jax.custom_vjp(jnp.tanh)  # the old pattern: reverse rule only, so jax.jvp cannot run
    f.defvjp(lambda x: (jnp.tanh(x), jnp.tanh(x)), lambda y, g: (g * (1 - y * y),))
    result = check_op(dataclasses.replace(by_name("tanh"), name="tanh (custom_vjp)", fn=f))
    assert set(result.failures) == FORWARD | {"float64 adjoint", "float64 second order"}
    assert result.forward == {"float32": float("inf"), "float64": float("inf")}
    assert any("jax.jvp failed" in note for note in result.notes)


def test_finite_differences_catch_a_rule_that_disagrees_with_its_own_forward():
    # both rules are tanh's (agree with the twin and with each other) but the value is 2·tanh:
    # only finite differences see it
    spec = planted("tanh", lambda x: 2 * jnp.tanh(x), save=lambda x: (2 * jnp.tanh(x), jnp.tanh(x)),
                   vjp=lambda y, g: (g * (1 - y * y),), jvp=lambda y, t: t * (1 - y * y))
    result = check_op(spec)
    assert result.failures == ["float32 vs finite_diff", "float64 vs finite_diff"]


def test_a_planted_kink_convention_fails_the_kink_column():
    result = check_op(_relu_with_gradient_1_at_0())
    # away from 0 the planted rule is ReLU's: every other column passes
    assert result.failures == ["kink x = 0 (rev)", "kink x = 0 (fwd)"]
    (kink,) = result.kinks
    assert not kink.reverse and kink.forward is False and "documented [0.0]" in kink.detail
    assert check_op(by_name("relu")).kinks[0].passed


@pytest.mark.parametrize("name", ["tanh", "affine", "softmax_cross_entropy"])
def test_checker_passes_the_real_rules(name):
    """The full check (every shape, second order) on a few ops; every op's quick check: tests/test_registry_ops.py."""
    if name not in {spec.name for spec in funcnet.registry.OPS}:
        pytest.skip(f"{name} is not in funcnet.registry.OPS yet")
    result = check_op(by_name(name))
    assert result.passed, result.failures
    assert set(result.forward) == {"float32", "float64"} and set(result.adjoint) == {"float64"}
    assert len(result.kinks) == len(by_name(name).kinks) and all(k.passed for k in result.kinks)


def test_limits_come_from_the_one_tolerance_table():
    import funcnet.gradcheck.model as model
    import funcnet.gradcheck.ops as ops

    assert not hasattr(ops, "TOLERANCES") and not hasattr(model, "TOLERANCES")
    with pytest.warns(DeprecationWarning, match="THRESHOLDS is deprecated"):
        from funcnet.gradcheck import THRESHOLDS
    with pytest.warns(DeprecationWarning, match="DEFAULT_TOLERANCES is deprecated"):
        from funcnet.registry import DEFAULT_TOLERANCES
    assert DEFAULT_TOLERANCES is tolerances.AUTODIFF
    for dtype in ("float32", "float64"):
        for kind in ("autodiff", "finite_diff", "adjoint"):
            assert THRESHOLDS[dtype][kind] == tolerances.tolerance(kind, dtype).rtol
        assert model.limits(dtype) == {k: tolerances.tolerance(k, dtype).rtol for k in ("autodiff", "finite_diff")}


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
    table = op_table([good, bad])
    lines = table.splitlines()
    for column in ("f32 vs autodiff", "f64 vs fin.diff", "f32 fwd vs twin", "f64 fwd vs twin", "f64 adjoint", "kinks"):
        assert column in lines[0]
    assert lines[2].startswith("relu") and lines[2].endswith("ok") and " 1/1  ok" in lines[2]
    assert "FAIL" in lines[3] and "float64 vs finite_diff" in lines[3] and "float64 adjoint" in lines[3]
    assert lines[-1].startswith("1/2 ops passed") and "funcnet.tolerances" in lines[-1]


def test_cli_passes_real_ops_and_fails_a_planted_one(monkeypatch, capsys):
    assert cli.main(["gradcheck", "--op", "relu", "--op", "softmax"]) == 0
    out = capsys.readouterr().out
    assert "relu" in out and "2/2 ops passed" in out and "f64 adjoint" in out
    monkeypatch.setattr(funcnet.registry, "OPS", funcnet.registry.OPS + (PLANTED["sign flip"],))
    assert cli.main(["gradcheck", "--op", "relu", "--op", "sigmoid (planted)"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_cli_fails_a_planted_forward_rule(monkeypatch, capsys):
    spec = PLANTED_FORWARD["tanh: 1 - y instead of 1 - y²"]
    monkeypatch.setattr(funcnet.registry, "OPS", funcnet.registry.OPS + (spec,))
    assert cli.main(["gradcheck", "--op", "tanh (planted)"]) == 1
    out = capsys.readouterr().out
    assert "FAIL: float32 fwd vs twin, float64 fwd vs twin, float64 adjoint" in out


def test_cli_fails_a_relu_with_gradient_1_at_0(monkeypatch, capsys):
    monkeypatch.setattr(funcnet.registry, "OPS", funcnet.registry.OPS + (_relu_with_gradient_1_at_0(),))
    assert cli.main(["gradcheck", "--op", "relu", "--op", "relu (planted kink)"]) == 1
    lines = capsys.readouterr().out.splitlines()
    (row,) = [line for line in lines if line.startswith("relu (planted kink)")]
    assert " 0/1  FAIL: kink x = 0 (rev), kink x = 0 (fwd)" in row
    assert lines[-1].startswith("1/2 ops passed")
    assert cli.main(["gradcheck", "--op", "relu (planted kink)", "--json"]) == 1
    (op,) = json.loads(capsys.readouterr().out)["ops"]
    assert op["kinks"] == [{"where": "x = 0", "reverse": False, "forward": False,
                            "detail": op["kinks"][0]["detail"]}]
    assert not op["passed"] and op["failures"] == ["kink x = 0 (rev)", "kink x = 0 (fwd)"]


@pytest.mark.slow
def test_cli_unknown_op_is_one_line_and_nonzero():
    proc = subprocess.run([sys.executable, "-m", "funcnet", "gradcheck", "--op", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unknown op 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cli_bad_option_is_nonzero_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "funcnet", "gradcheck", "--seed", "x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--seed" in proc.stderr and "'x'" in proc.stderr


def test_cli_model_section_and_json(capsys):
    assert cli.main(["gradcheck", "--model", "mlp", "--activation", "relu", "--activation", "elu"]) == 0
    out = capsys.readouterr().out
    assert "mlp relu" in out and "mlp elu" in out and "2/2 models passed" in out
    assert cli.main(["gradcheck", "--op", "tanh", "--model", "mlp", "--activation", "tanh", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["passed"] and [r["op"] for r in result["ops"]] == ["tanh"]
    (op,) = result["ops"]
    assert set(op["forward"]) == {"float32", "float64"} and op["adjoint"]["float64"] < 1e-10 and op["kinks"] == []
    (model,) = result["models"]
    assert model["model"] == "mlp tanh" and {leaf["path"] for leaf in model["leaves"]} >= {"dense_0/w", "dense_2/b"}
    # whole models: both modes and second order
    assert {"fwd manual vs finite differences", "Hv rev-over-rev vs autodiff", "Hv fwd-over-rev vs autodiff"} <= set(
        model["leaves"][0]["pairs"])


def test_cli_fails_a_model_with_a_planted_rule(monkeypatch, capsys):
    from funcnet.apps import models

    real = models.mlp_loss_pair

    def planted_pair(activation, sizes, lam=1e-3):
        init, manual, twin = real(activation, sizes, lam)
        return init, lambda p, x, y: manual(p, x, y) + 0.0 * twin(p, x, y) + jax.lax.stop_gradient(
            jnp.sum(p["dense_0"]["b"])) - jnp.sum(p["dense_0"]["b"]) * 1e-2, twin

    monkeypatch.setattr(models, "mlp_loss_pair", planted_pair)
    assert cli.main(["gradcheck", "--model", "mlp", "--activation", "relu"]) == 1
    out = capsys.readouterr().out
    assert "FAIL: dense_0/b" in out


def test_cli_default_is_the_quick_sweep_and_all_the_full_one(monkeypatch, capsys):
    """The default checks each op's first input shape and two models (about a minute, with progress on
    stderr); --all every shape and a model per activation."""
    import funcnet.apps.models as models
    import funcnet.gradcheck as gradcheck

    seen = {}
    monkeypatch.setattr(gradcheck, "check_registry", lambda ops, seed, quick, progress: seen.update(
        ops=len(list(progress(ops))), quick=quick) or [])
    monkeypatch.setattr(models, "check_mlp", lambda activation, **kw: seen.setdefault("models", []).append(
        activation) or check_gradients(lambda w: jnp.sum(w ** 2), jnp.ones(2)))
    assert cli.main(["gradcheck"]) == 0
    assert seen["quick"] is True and seen["ops"] == len(funcnet.registry.OPS) and seen["models"] == ["relu", "gelu"]
    assert "gradcheck ops" in capsys.readouterr().err  # the progress bar
    seen.clear()
    assert cli.main(["gradcheck", "--all", "--no-progress"]) == 0
    assert seen["quick"] is False and len(seen["models"]) == len(funcnet.layers.ACTIVATIONS)
    assert "gradcheck ops" not in capsys.readouterr().err


def test_cli_checks_the_transformer_model(capsys):
    """``--model transformer``: every leaf of the small causal language model (embeddings, attention, MLP, norms,
    the fused head), both modes and second order, one activation. That the checker fails a planted rule is the
    test above (on the MLP); the transformer's own planted faults are tests/test_transformer.py's."""
    assert cli.main(["gradcheck", "--model", "transformer", "--activation", "gelu", "--json", "--no-progress"]) == 0
    (model,) = json.loads(capsys.readouterr().out)["models"]
    paths = {leaf["path"] for leaf in model["leaves"]}
    assert model["model"] == "transformer gelu" and model["passed"] and len(paths) == 21
    assert {"head/w", "head/b", "trunk/embedding_0/table", "trunk/positional_embedding_0/table",
            "trunk/transformer_block_0/attention/key/w", "trunk/transformer_block_0/mlp_out/w"} <= paths
    # its MLP is the fused ActivationThenDense: prelu (a parameter of its own) is refused in one line
    assert cli.main(["gradcheck", "--model", "transformer", "--activation", "prelu"]) == 2
    assert "--model transformer: its MLP cannot use --activation prelu" in capsys.readouterr().err
