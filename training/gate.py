"""The ship gate: may a candidate recipe replace the shipped acoustic model?

``python -m training gate --candidate RUN.json ... --v2 RUN.json ... --v4 RUN.json ...
[--calibration temperature|offsets|prior-shift] [--min-seeds 3] [--json]``

Each RUN.json is the ``--json`` output of ``python -m training acoustic`` (or of
``python -m training held-out``) for one seed and one protocol: leave one corpus out
(``loco``) or speaker-grouped k-fold (``kfold5``). Every figure is the mean over a
recipe's runs of that protocol. The candidate passes only if all hold:

- (a) its mean LOCO UA over the held-out corpora beats both v2's and v4's recipes by at
  least 1 point;
- (b) on every held-out corpus (LOCO): no label of the corpus takes more than 1.5x its
  true share of clips, labels the corpus lacks take at most 15% of them together, and
  anger precision is at least 0.60;
- (c) on no corpus is its k-fold UA more than 1 point below the better of the two;
- (d) on every held-out corpus its LOCO ECE is at most 0.10 (``--calibration offsets``:
  after the temperature and per-class offsets fit on the other corpora's LOCO
  predictions; ``prior-shift``: and the class priors re-estimated over the held-out
  corpus's clips; (a), (b) of the candidate with them too);
- and every recipe has at least ``--min-seeds`` runs of each protocol.

UA is over the model's labels with calm and boredom read as neutral. Exit status 0:
the candidate passes; 1: it does not; 2: bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

UA_MARGIN: Final = 0.01
"""(a): the candidate's mean LOCO UA must beat both recipes' by this much."""
MAX_SHARE_RATIO: Final = 1.5
"""(b): no label of a corpus may take more than this times its true share."""
MAX_FOREIGN_SHARE: Final = 0.15
"""(b): labels a corpus lacks may take at most this share of its clips together."""
MIN_ANGER_PRECISION: Final = 0.60
"""(b): precision of anger on every held-out corpus."""
KFOLD_SLACK: Final = 0.01
"""(c): the most the k-fold UA of a corpus may fall below the better recipe's."""
MAX_ECE: Final = 0.10
"""(d): LOCO ECE of every held-out corpus."""
RECIPES: Final = ("candidate", "v2", "v4")
CALIBRATIONS: Final = {
    "temperature": None,
    "offsets": "with_offsets",
    "prior-shift": "with_prior_shift",
}
"""``--calibration``: the held-out entry key of the candidate's LOCO figures."""


@dataclass
class Recipe:
    """A recipe's runs by protocol (``loco``, ``kfold``): each run's held-out entries
    by corpus."""

    name: str
    runs: dict[str, list[dict[str, dict[str, Any]]]] = field(default_factory=dict)


def load_run(path: Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """The protocol (``loco`` or ``kfold``) and held-out entries of one run report.

    Raises:
        ValueError: missing, not JSON, or no held-out report of either protocol.
    """
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a run report ({err})") from err
    report = doc.get("evaluation", doc) if isinstance(doc, dict) else {}
    protocol = str(report.get("protocol", ""))
    kind = "loco" if protocol == "loco" else "kfold" if "kfold" in protocol else None
    if kind is None or not isinstance(report.get("held_out"), dict):
        raise ValueError(
            f"{path}: no held-out report of a loco or kfold run (protocol {protocol!r})"
        )
    return kind, report["held_out"]


def mean_figures(
    runs: list[dict[str, dict[str, Any]]], calibrated: str | None = None
) -> dict[str, dict[str, Any]]:
    """Per corpus, the mean over ``runs`` of UA, restricted UA, ECE, the label
    shares, the foreign share and anger precision; the largest share ratio is of
    the mean shares. ``calibrated``: of the entries under that key (``CALIBRATIONS``).

    Raises:
        ValueError: the runs hold different corpora, or an entry lacks what it needs.
    """
    corpora = sorted(runs[0])
    if any(sorted(run) != corpora for run in runs):
        raise ValueError("the runs of a recipe hold different corpora")
    out = {}
    for corpus in corpora:
        try:
            entries = [
                run[corpus][calibrated] if calibrated else run[corpus] for run in runs
            ]
            ua = float(np.mean([e["folded"]["ua"] for e in entries]))
            restricted = float(np.mean([e["restricted"]["ua"] for e in entries]))
            ece = float(np.mean([e["ece"] for e in entries]))
            foreign = float(np.mean([e["foreign_share"] for e in entries]))
            shares = _mean_shares([e["shares"] for e in entries])
            precisions = [
                e["anger_precision"]
                for e in entries
                if e["anger_precision"] is not None
            ]
        except KeyError as err:
            raise ValueError(
                f"{corpus}: the run report lacks {err} (made before the held-out "
                "report had shares; rescore its oof npz with `training held-out`)"
            ) from err
        ratios = {k: s["predicted"] / s["true"] for k, s in shares.items() if s["true"]}
        worst = max(sorted(ratios), key=lambda k: ratios[k])
        out[corpus] = {
            "ua": ua,
            "restricted_ua": restricted,
            "ece": ece,
            "foreign_share": foreign,
            "shares": shares,
            "max_ratio": ratios[worst],
            "max_ratio_label": worst,
            "anger_precision": float(np.mean(precisions)) if precisions else None,
            "runs": len(entries),
        }
    return out


def _mean_shares(all_shares: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    labels = sorted({k for shares in all_shares for k in shares})
    zero = {"true": 0.0, "predicted": 0.0}
    return {
        k: {
            part: float(np.mean([s.get(k, zero)[part] for s in all_shares]))
            for part in ("true", "predicted")
        }
        for k in labels
    }


def verdict(
    recipes: dict[str, Recipe], calibration: str = "temperature", min_seeds: int = 3
) -> dict[str, Any]:
    """Each condition's verdict, its reasons and the figures behind it.

    Raises:
        ValueError: a recipe lacks a protocol, or the recipes' corpora differ.
    """
    figures: dict[str, dict[str, Any]] = {}
    for name, recipe in recipes.items():
        for kind in ("loco", "kfold"):
            if not recipe.runs.get(kind):
                raise ValueError(f"{name}: no {kind} run")
        figures[name] = {
            "loco": mean_figures(
                recipe.runs["loco"],
                CALIBRATIONS[calibration] if name == "candidate" else None,
            ),
            "kfold": mean_figures(recipe.runs["kfold"]),
        }
    for kind in ("loco", "kfold"):
        if len({tuple(sorted(f[kind])) for f in figures.values()}) > 1:
            raise ValueError(f"the recipes' {kind} runs hold different corpora")
    cand = figures["candidate"]
    checks = {
        "seeds": _seeds(recipes, min_seeds),
        "a": _check_a(figures),
        "b": _check_b(cand["loco"]),
        "c": _check_c(figures),
        "d": [
            f"{c}: ECE {f['ece']:.3f} > {MAX_ECE}"
            for c, f in cand["loco"].items()
            if f["ece"] > MAX_ECE
        ],
    }
    return {
        "pass": not any(checks.values()),
        "conditions": {k: {"pass": not v, "reasons": v} for k, v in checks.items()},
        "figures": figures,
        "calibration": calibration,
    }


def _seeds(recipes: dict[str, Recipe], min_seeds: int) -> list[str]:
    return [
        f"{name}: {len(recipe.runs[kind])} {kind} run(s) < {min_seeds}"
        for name, recipe in recipes.items()
        for kind in ("loco", "kfold")
        if len(recipe.runs[kind]) < min_seeds
    ]


def _mean_ua(loco: dict[str, dict[str, Any]]) -> float:
    return float(np.mean([f["ua"] for f in loco.values()]))


def _check_a(figures: dict[str, dict[str, Any]]) -> list[str]:
    cand = _mean_ua(figures["candidate"]["loco"])
    return [
        f"mean LOCO UA {100 * cand:.1f} < {name}'s {100 * _mean_ua(figures[name]['loco']):.1f} + 1"
        for name in ("v2", "v4")
        if cand < _mean_ua(figures[name]["loco"]) + UA_MARGIN - 1e-9
    ]


def _check_b(loco: dict[str, dict[str, Any]]) -> list[str]:
    reasons = []
    for corpus, f in loco.items():
        if f["max_ratio"] > MAX_SHARE_RATIO:
            share = f["shares"][f["max_ratio_label"]]
            reasons.append(
                f"{corpus}: {f['max_ratio_label']} takes {100 * share['predicted']:.0f}% "
                f"of clips, {f['max_ratio']:.2f}x its true {100 * share['true']:.0f}%"
            )
        if f["foreign_share"] > MAX_FOREIGN_SHARE:
            reasons.append(
                f"{corpus}: labels it lacks take {100 * f['foreign_share']:.0f}% of clips"
            )
        precision = f["anger_precision"]
        if precision is None or precision < MIN_ANGER_PRECISION:
            reasons.append(
                f"{corpus}: anger precision "
                + (
                    "undefined (no clip called anger)"
                    if precision is None
                    else f"{precision:.2f}"
                )
                + f" < {MIN_ANGER_PRECISION}"
            )
    return reasons


def _check_c(figures: dict[str, dict[str, Any]]) -> list[str]:
    reasons = []
    for corpus, f in figures["candidate"]["kfold"].items():
        best = max(figures[n]["kfold"][corpus]["ua"] for n in ("v2", "v4"))
        if f["ua"] < best - KFOLD_SLACK - 1e-9:
            reasons.append(
                f"{corpus}: k-fold UA {100 * f['ua']:.1f} < best recipe's {100 * best:.1f} - 1"
            )
    return reasons


def format_verdict(result: dict[str, Any]) -> str:
    """The verdict as lines of text: the figures, each condition, the overall."""
    lines = []
    for name, figures in result["figures"].items():
        for kind in ("loco", "kfold"):
            for corpus, f in figures[kind].items():
                precision = f["anger_precision"]
                lines.append(
                    f"{name} {kind} {corpus} ({f['runs']} runs): UA {100 * f['ua']:.1f}, "
                    f"restricted {100 * f['restricted_ua']:.1f}, ECE {f['ece']:.3f}, "
                    f"{f['max_ratio_label']} {f['max_ratio']:.2f}x its share, foreign "
                    f"{100 * f['foreign_share']:.0f}%, anger precision "
                    + ("n/a" if precision is None else f"{precision:.2f}")
                )
    names = {
        "seeds": "seeds per recipe",
        "a": "(a) mean LOCO UA beats v2's and v4's recipes by 1 point",
        "b": "(b) no flood, few foreign labels, anger precision on every held-out corpus",
        "c": "(c) k-fold UA within 1 point of the better recipe on every corpus",
        "d": "(d) LOCO ECE <= 0.10 on every held-out corpus",
    }
    for key, condition in result["conditions"].items():
        lines.append(f"{'PASS' if condition['pass'] else 'FAIL'} {names[key]}")
        lines += [f"  - {reason}" for reason in condition["reasons"]]
    lines.append(f"gate: {'PASS' if result['pass'] else 'FAIL'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``python -m training gate``)."""
    parser = argparse.ArgumentParser(
        prog="python -m training gate", description=__doc__.split("\n")[0]
    )
    for name in RECIPES:
        parser.add_argument(
            f"--{name}",
            nargs="+",
            action="extend",
            type=Path,
            required=True,
            help=f"run reports of {name}'s recipe (loco and kfold, one per seed)",
        )
    parser.add_argument(
        "--calibration",
        default="temperature",
        choices=sorted(CALIBRATIONS),
        help="what the candidate ships beside its temperature: read its LOCO "
        "figures after per-class offsets, or after them and the online priors",
    )
    parser.add_argument("--min-seeds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        recipes = {name: Recipe(name) for name in RECIPES}
        for name in RECIPES:
            for path in getattr(args, name):
                kind, held_out = load_run(path)
                recipes[name].runs.setdefault(kind, []).append(held_out)
        result = verdict(recipes, args.calibration, args.min_seeds)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result) if args.json else format_verdict(result))
    return 0 if result["pass"] else 1
