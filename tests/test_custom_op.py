"""Writing your own op: ``funcnet.custom_op``, ``funcnet.check_op`` on it, and ``funcnet gradcheck --module``."""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet
from funcnet.apps import cli

SOURCE = textwrap.dedent("""
    import jax.numpy as jnp
    import funcnet

    cube = funcnet.custom_op(
        "cube",
        save=lambda x: (x ** 3, x),
        vjp=lambda x, g: ({vjp},),
        jvp=lambda x, t: {jvp},
        twin=lambda x: x ** 3,
    )
    not_an_op = 3
""")


def cube_op(vjp="3 * x ** 2 * g", jvp="3 * x ** 2 * t"):
    namespace = {}
    exec(SOURCE.format(vjp=vjp, jvp=jvp), namespace)  # noqa: S102 - the test's own source
    return namespace["cube"]


def test_a_custom_op_runs_its_rules_under_transformations_and_passes_the_checks():
    cube = cube_op()
    x = jnp.array([-1.0, 0.5, 2.0])
    np.testing.assert_allclose(jax.jit(jax.grad(lambda x: cube(x).sum()))(x), 3 * x**2)
    np.testing.assert_allclose(jax.jvp(cube, (x,), (jnp.ones(3),))[1], 3 * x**2)
    np.testing.assert_allclose(jax.grad(jax.checkpoint(lambda x: cube(x).sum()))(x), 3 * x**2)
    np.testing.assert_allclose(jax.hessian(lambda x: cube(x).sum())(x), np.diag(6 * x), rtol=1e-6)
    report = funcnet.check_op(cube)
    assert report.passed, report.failures
    assert set(report.second) == {"float64"} and report.second["float64"] <= 1e-9


@pytest.mark.parametrize("vjp, jvp, failed", [
    ("3 * x * g", "3 * x ** 2 * t", {"vs autodiff", "vs finite_diff", "adjoint", "second order"}),
    ("3 * x ** 2 * g", "2 * x ** 2 * t", {"fwd vs twin", "adjoint"}),
])
def test_check_op_fails_a_custom_op_with_a_wrong_rule(vjp, jvp, failed):
    report = funcnet.check_op(cube_op(vjp, jvp))
    assert not report.passed
    assert {f.split(" ", 1)[1] for f in report.failures} == failed


def test_a_custom_op_with_static_parameters_and_a_kink():
    clip = funcnet.custom_op(
        "clip_at",
        save=lambda x, limit: (jnp.minimum(x, limit), x),
        vjp=lambda x, g, limit: (jnp.where(x < limit, g, 0.0),),
        jvp=lambda x, t, limit: jnp.where(x < limit, t, 0.0),
        twin=lambda x, limit: jnp.minimum(x, limit),
        static={"limit": 0.5},
        kinks=[funcnet.Kink("x = limit", (np.array([1.0]),), np.array([0.0]), {"limit": 1.0})],
        kink="gradient 0 at x = limit",
    )
    x = jnp.array([0.0, 2.0])
    np.testing.assert_allclose(jax.grad(lambda x: clip(x, limit=1.0).sum())(x), [1.0, 0.0])
    report = funcnet.check_op(clip)
    assert report.passed and report.kinks[0].passed, report.failures


def test_custom_op_errors_name_the_op_and_the_remedy():
    with pytest.raises(ValueError, match="name must be an identifier"):
        funcnet.custom_op("my op", save=lambda x: (x, x), vjp=lambda r, g: (g,), jvp=lambda r, t: t)
    with pytest.raises(TypeError, match=r"custom_op\('f'\): vjp must be callable"):
        funcnet.custom_op("f", save=lambda x: (x, x), vjp=None, jvp=lambda r, t: t)
    with pytest.raises(ValueError, match=r"takes 2 arguments; give cases="):
        funcnet.custom_op("mul2", save=lambda x, y: (x * y, (x, y)), vjp=lambda r, g: (g, g), jvp=lambda r, a, b: a)


def test_gradcheck_module_checks_every_custom_op_of_a_file(tmp_path, capsys):
    good = tmp_path / "good_ops.py"
    good.write_text(SOURCE.format(vjp="3 * x ** 2 * g", jvp="3 * x ** 2 * t"))
    assert cli.main(["gradcheck", "--module", str(good)]) == 0
    out = capsys.readouterr().out
    assert "cube" in out and "1/1 ops passed" in out and "f64 2nd order" in out
    bad = tmp_path / "bad_ops.py"
    bad.write_text(SOURCE.format(vjp="3 * x * g", jvp="3 * x ** 2 * t"))
    assert cli.main(["gradcheck", "--module", str(bad)]) == 1
    assert "FAIL" in capsys.readouterr().out


@pytest.mark.parametrize("contents, message", [
    (None, "no such file"),
    ("x = 1\n", "defines no op made by funcnet.custom_op"),
    ("raise RuntimeError('boom')\n", "importing it failed: RuntimeError: boom"),
])
def test_gradcheck_module_errors_are_one_line(tmp_path, capsys, contents, message):
    path = tmp_path / "mod.py"
    if contents is not None:
        path.write_text(contents)
    assert cli.main(["gradcheck", "--module", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_reverse_rule_that_takes_wanted_is_told_which_cotangents_are_used():
    told = []

    def vjp(res, g, wanted=(True, True)):
        told.append(tuple(wanted))
        x, w = res
        return (g * w if wanted[0] else None), (g * x if wanted[1] else None)

    scale = funcnet.custom_op("scale_told", save=lambda x, w: (x * w, (x, w)), vjp=vjp,
                              jvp=lambda res, tx, tw: (0 if tx is None else tx * res[1]) + (0 if tw is None else tw * res[0]),
                              cases=[((2,), (2,))])
    x, w = jnp.array([1.0, 2.0]), jnp.array([3.0, 5.0])
    assert jnp.allclose(jax.grad(lambda x: jnp.sum(scale(x, w)))(x), w)
    assert jnp.allclose(jax.grad(lambda w: jnp.sum(scale(x, w)))(w), x)
    gx, gw = jax.grad(lambda x, w: jnp.sum(scale(x, w)), argnums=(0, 1))(x, w)
    assert jnp.allclose(gx, w) and jnp.allclose(gw, x)
    assert told == [(True, False), (False, True), (True, True)]
