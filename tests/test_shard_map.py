"""Every registry op inside ``jax.shard_map`` (JAX's default vma checks), on 4 host devices.

The batch is split over a ``data`` axis and every other argument (weights,
slopes) is replicated; the gradients of a psum-ed loss must equal the same code
outside shard_map, for the manual rules (both forms: the linear-primitive binding and custom_vjp), and the
same MLP step on ``jax.nn``/``optax`` must agree with funcnet's. Runs in a
subprocess because the device count is fixed when JAX starts.
"""

import pytest
import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_num_cpu_devices", 4)
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp, numpy as np, optax
    from jax.sharding import PartitionSpec as P
    from funcnet import gates, losses, nn
    from funcnet import custom_vjp_form
    import contextlib
    from funcnet.registry import OPS, cast_args
    import funcnet.ops.binding as rule_module

    planted = sys.argv[1:] == ["planted"]
    if planted:  # a planted fault: no cast to the common varying axes
        rule_module._common_vma = lambda args: args

    mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    failures, checked, planted_checked = [], 0, 0

    def batched(spec, rng):
        # a leading batch of 8 on the first argument; the others replicated
        case = spec.cases[-1]
        args = cast_args(spec.sample(rng, case), spec.diff_argnums, "float64")
        if isinstance(args[0], dict):
            return None
        first = jnp.stack([cast_args(spec.sample(rng, case), spec.diff_argnums, "float64")[0] for _ in range(8)])
        return (first,) + tuple(args[1:])

    rng = np.random.default_rng(0)
    # the planted run needs only ops with a replicated float argument beside the batch (and a control)
    for spec in [s for s in OPS if not planted or s.name in ("affine", "matmul", "prelu", "tanh")]:
        args = batched(spec, rng)
        if args is None:
            continue
        per_example = jax.vmap(lambda a0, *rest: spec.op(a0, *rest), in_axes=(0,) + (None,) * (len(args) - 1))
        def loss(*a):
            return sum(jnp.sum(o ** 2) for o in jax.tree.leaves(per_example(*a)))  # a tuple: CTC's forward probs
        argnums = spec.diff_argnums
        def sharded_loss(*a):
            return jax.lax.psum(loss(*a), "data")
        specs = (P("data"),) + (P(),) * (len(args) - 1)
        outs = tuple(P("data") if i == 0 else P() for i in argnums)
        sharded_grad = jax.shard_map(jax.grad(sharded_loss, argnums), mesh=mesh, in_specs=specs, out_specs=outs)
        def sharded_jvp(*a_and_u):
            a, u = a_and_u[:len(args)], a_and_u[len(args):]
            def of_diff(*d):
                full = list(a)
                for i, v in zip(argnums, d):
                    full[i] = v
                return sharded_loss(*full)
            return jax.jvp(of_diff, tuple(a[i] for i in argnums), u)[1]
        sharded_tangent = jax.shard_map(sharded_jvp, mesh=mesh, in_specs=specs + tuple(specs[i] for i in argnums),
                                        out_specs=P())
        u = tuple(jnp.asarray(rng.standard_normal(np.shape(args[i]))) for i in argnums)
        # one program per op (traced afresh for each form and for the planted rules):
        # the unsharded gradient, and the gradient and tangent inside shard_map
        # (the custom_vjp form has no forward mode: no tangent there)
        program = lambda tangent=True: jax.jit(lambda args, u: (  # noqa: E731
            jax.grad(loss, argnums)(*args), sharded_grad(*args), sharded_tangent(*args, *u) if tangent else None))
        # the custom_vjp form on a few ops (its shard_map path is the same cast), the rules on every op
        routes = [("rules", contextlib.nullcontext)] + (
            [("custom_vjp", custom_vjp_form)] if spec.name in ("affine", "prelu", "softmax_cross_entropy") else [])
        for route, form in routes:
            with form():
                try:
                    if route == "rules":
                        want, got, tangent = program(True)(args, u)
                    else:
                        got = program(False)(args, u)[1]
                    for i, (g, w) in enumerate(zip(got, want)):
                        if not np.allclose(g, w, rtol=1e-9, atol=1e-12):
                            failures.append(f"{spec.name} {route} arg {argnums[i]}")
                except Exception as err:
                    failures.append(f"{spec.name} {route}: {type(err).__name__}: {str(err)[:200]}")
                checked += 1
        if planted:
            continue
        # the rules that run inside shard_map are the written ones: planted x3 reverse and x5 forward rules
        try:
            saved = [(r, r.vjp, r.jvp) for r in spec.forms]
            for r, vjp, jvp in saved:
                r.vjp = lambda res, g, _v=vjp, **st: tuple(None if c is None else 3.0 * c for c in _v(res, g, **st))
                r.jvp = lambda res, *t, _j=jvp, **st: (lambda y: None if y is None else 5.0 * y)(_j(res, *t, **st))
            try:
                _, planted_grad, planted_tangent = program()(args, u)
            finally:
                for r, vjp, jvp in saved:
                    r.vjp, r.jvp = vjp, jvp
            if not all(np.allclose(g, 3.0 * w, rtol=1e-9, atol=1e-12) for g, w in zip(planted_grad, want)):
                failures.append(f"{spec.name}: grad in shard_map did not run the reverse rule")
            if not np.allclose(planted_tangent, 5.0 * tangent, rtol=1e-9, atol=1e-12):
                failures.append(f"{spec.name}: jvp in shard_map did not run the forward rule")
            planted_checked += 1
        except Exception as err:
            failures.append(f"{spec.name} planted: {type(err).__name__}: {str(err)[:200]}")

    # an MLP step on funcnet against the same step on jax.nn + optax
    x = jnp.asarray(rng.normal(size=(16, 5))); y = jnp.asarray(rng.integers(0, 3, 16))
    params = {"w0": jnp.asarray(rng.normal(size=(5, 7))), "b0": jnp.zeros(7),
              "w1": jnp.asarray(rng.normal(size=(7, 3))), "b1": jnp.zeros(3)}
    def mlp_loss(ops_affine, act, ce, p, x, y):
        h = act(ops_affine(x, p["w0"], p["b0"]))
        return jax.lax.psum(ce(ops_affine(h, p["w1"], p["b1"]), y).sum(), "data")
    def step(fn):
        return jax.jit(jax.shard_map(jax.grad(fn), mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=P()))
    ours = step(lambda p, x, y: mlp_loss(gates.affine, nn.relu, losses.softmax_cross_entropy_with_integer_labels, p, x, y))
    theirs = step(lambda p, x, y: mlp_loss(lambda x, w, b: x @ w + b, jax.nn.relu,
                                           optax.losses.softmax_cross_entropy_with_integer_labels, p, x, y))
    try:
        g1, g2 = ours(params, x, y), theirs(params, x, y)
        mlp_ok = all(np.allclose(g1[k], g2[k], rtol=1e-9, atol=1e-12) for k in params)
    except Exception as err:
        failures.append(f"mlp: {type(err).__name__}: {str(err)[:200]}")
        mlp_ok = False
    print(json.dumps({"failures": failures, "checked": checked, "planted_checked": planted_checked,
                      "mlp_ok": mlp_ok}))
""")


def run(*argv):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *argv], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_every_op_inside_shard_map_matches_unsharded_gradients():
    out = run()
    assert out["failures"] == [], out["failures"]
    assert out["checked"] >= 40 and out["planted_checked"] >= 40
    assert out["mlp_ok"]


@pytest.mark.slow
def test_the_check_catches_rules_that_skip_the_cast_to_common_varying_axes():
    out = run("planted")
    assert not out["mlp_ok"]
    failed = {f.split(" ")[0] for f in out["failures"]}
    assert {"affine", "matmul", "prelu"} <= failed, sorted(failed)
    assert "tanh" not in failed  # one argument: nothing to cast, so the planted fault cannot touch it
