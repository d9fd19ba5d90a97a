"""The text tables ``funcnet gradcheck`` prints: one row per op, and one per whole model."""

from __future__ import annotations

from typing import Sequence

from funcnet.gradcheck.model import PAIRS, GradientReport
from funcnet import tolerances
from funcnet.gradcheck.ops import KinkCheck, OpCheck

__all__ = ["op_table", "model_table", "summary_row"]


def _cell(err: float | None, width: int = 15) -> str:
    return f"{'-':>{width}}" if err is None else f"{err:>{width}.2e}"


def _kink_cell(kinks: list[KinkCheck]) -> str:
    if not kinks:
        return f"{'-':>7}"
    return f"{sum(k.passed for k in kinks)}/{len(kinks)}".rjust(7)


def op_table(rows: Sequence[OpCheck]) -> str:
    """The rows as a fixed-width table with a final verdict line.

    Columns: the reverse rule against autodiff and finite differences (float32
    and float64 inputs), the forward rule against the twin's (float32, float64),
    the adjoint gap ⟨v, J u⟩ vs ⟨Jᵀ v, u⟩ (float64), Hessian-vector products through the reverse
    rule against the twin's (float64), and the documented kinks
    that hold (``-``: the op has none, or the column was not computed).
    """
    width = max(len(r.name) for r in rows)
    titles = ["f32 vs autodiff", "f32 vs fin.diff", "f64 vs autodiff", "f64 vs fin.diff",
              "f32 fwd vs twin", "f64 fwd vs twin", "f64 adjoint", "f64 2nd order"]
    head = f"{'op':<{width}}  " + "  ".join(f"{t:>15}" for t in titles) + f"  {'kinks':>7}  result"
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = [_cell(r.errors.get(d, {}).get(k)) for d in ("float32", "float64") for k in ("autodiff", "finite_diff")]
        cells += [_cell(r.forward.get(d)) for d in ("float32", "float64")]
        cells += [_cell(r.adjoint.get("float64")), _cell(r.second.get("float64"))]
        verdict = "ok" if r.passed else "FAIL: " + ", ".join(r.failures)
        lines.append(f"{r.name:<{width}}  " + "  ".join(cells) + f"  {_kink_cell(r.kinks)}  {verdict}")
    failed = sum(not r.passed for r in rows)
    lines.append("-" * len(head))
    limits = "; ".join(f"{d}: " + ", ".join(f"{k} {tolerances.tolerance(k, d).rtol:.0e}"
                                            for k in ("autodiff", "finite_diff", "adjoint"))
                       for d in ("float64", "float32"))
    lines.append(f"{len(rows) - failed}/{len(rows)} ops passed (max relative error; limits from funcnet.tolerances: "
                 f"{limits}; fwd vs twin and 2nd order as autodiff; kinks exact)")
    return "\n".join(lines)


def summary_row(name: str, report: GradientReport) -> dict:
    """The worst error of each comparison over all leaves, for the CLI's model table."""
    row = {"model": name, "leaves": len(report.leaves), "passed": report.passed, "failures": report.failures,
           "kinks": sum(leaf.kinks for leaf in report.leaves)}
    for leaf in report.leaves:
        for pair, err in leaf.pairs.items():
            row[pair] = max(row.get(pair, 0.0), err.max_rel)
    return row


def model_table(rows: list[dict]) -> str:
    pairs = [p for p in PAIRS if p != "autodiff vs finite differences" and any(p in r for r in rows)]
    width = max(34, *(len(r["model"]) for r in rows))
    head = f"{'whole model (every parameter leaf)':<{width}}  " \
        + "  ".join(f"{p:>{max(len(p), 10)}}" for p in pairs) + "  kinks  result"
    lines = [head, "-" * len(head)]
    for r in rows:
        verdict = "ok" if r["passed"] else "FAIL: " + ", ".join(r["failures"])
        cells = [f"{'-':>{max(len(p), 10)}}" if p not in r else f"{r[p]:>{max(len(p), 10)}.2e}" for p in pairs]
        lines.append(f"{r['model']:<{width}}  " + "  ".join(cells) + f"  {r['kinks']:>5}  {verdict}")
    n_ok = sum(r["passed"] for r in rows)
    lines.append("-" * len(head))
    lines.append(f"{n_ok}/{len(rows)} models passed (max relative error over leaves, float64; fwd: jax.jvp through "
                 "the forward rules; Hv: Hessian-vector products against the twin's; limits from funcnet.tolerances)")
    return "\n".join(lines)
