"""Score saved out-of-fold predictions again: the held-out report of an
``oof-PROTOCOL.npz`` that ``python -m training acoustic`` wrote, without retraining.

``python -m training held-out OOF.npz... [--protocol loco|kfold5] [--weighting
balanced|pooled] [--json]``

Several files are averaged first: an ensemble of their runs. Prints, per held-out
corpus, UA and restricted UA, ECE at the temperature fit on the other corpora, each
label's share of clips next to its true share, the share taken by labels the corpus
does not have, and the precision of anger; for leave-one-corpus-out predictions, the
same after the temperature and per-class offsets fit on the other corpora's
predictions (``training.acoustic.offsets``), and after those with the class priors
re-estimated online over the corpus's clips (``training.acoustic.label_shift``). Calm
and boredom read as neutral. ``--json`` prints the report as one object that
``python -m training gate`` reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.acoustic.offsets import WEIGHTINGS
from training.acoustic.report import held_out_scores


def read_oof(path: Path) -> dict[str, Any]:
    """The arrays of one ``oof-PROTOCOL.npz``: probs, y, labels, ids, affect.

    Raises:
        ValueError: the file is missing or is not such a file.
    """
    if not path.is_file():
        raise ValueError(f"{path} not found")
    try:
        with np.load(path, allow_pickle=False) as oof:
            out = {
                "probs": oof["probs"].astype(np.float64),
                "y": oof["y"].astype(np.int64),
                "labels": [str(k) for k in oof["labels"]],
                "ids": [str(i) for i in oof["ids"]],
                "affect": oof["affect"] if oof["affect"].size else None,
            }
    except (KeyError, OSError, ValueError) as err:
        raise ValueError(f"{path}: not out-of-fold predictions ({err})") from err
    if out["probs"].shape != (len(out["y"]), len(out["labels"])) or len(
        out["ids"]
    ) != len(out["y"]):
        raise ValueError(f"{path}: probabilities do not fit the labels")
    return out


def load_oof(
    paths: Sequence[Path], protocol: str, weighting: str = "balanced"
) -> dict[str, Any]:
    """The held-out report (``held_out_scores``) of the predictions in ``paths``,
    averaged when there are several (an ensemble of the runs: the same clips and
    labels), with ``protocol`` and ``sources``; each row's corpus is its id's
    prefix (``corpus:key``).

    Raises:
        ValueError: a file is missing or is not such a file, or the files' clips or
            labels differ.
    """
    runs = [read_oof(path) for path in paths]
    first = runs[0]
    for path, run in zip(paths[1:], runs[1:], strict=True):
        if run["ids"] != first["ids"] or run["labels"] != first["labels"]:
            raise ValueError(f"{path}: other clips or labels than {paths[0]}")
    probs = np.mean([run["probs"] for run in runs], axis=0)
    affects = [run["affect"] for run in runs if run["affect"] is not None]
    affect = np.mean(affects, axis=0) if len(affects) == len(runs) else None
    y, labels = first["y"], first["labels"]
    corpora = np.array([i.split(":", 1)[0] for i in first["ids"]])
    corpus_labels = {
        c: [labels[k] for k in sorted(set(y[corpora == c].tolist()))]
        for c in sorted(set(corpora.tolist()))
    }
    report = held_out_scores(
        probs, y, labels, corpora, corpus_labels, affect, protocol == "loco", weighting
    )
    return {
        "protocol": protocol,
        "sources": [str(p) for p in paths],
        "weighting": weighting,
        **report,
    }


def table(report: dict[str, Any]) -> str:
    """The report as a Markdown table, one row per corpus (and per corpus with
    offsets, where fit)."""
    lines = [
        "| held out | UA | UA restricted | ECE | largest share / true share "
        "| foreign labels | anger precision (called) | predicted share (true) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for corpus, entry in report["held_out"].items():
        lines.append(_row(corpus, entry))
        for key, name in (
            ("with_offsets", "offsets"),
            ("with_prior_shift", "+ priors"),
            ("with_own_offsets", "own offsets (diagnosis)"),
        ):
            if key in entry:
                lines.append(_row(f"{corpus}, {name}", entry[key]))
    return "\n".join(lines)


def _row(name: str, e: dict[str, Any]) -> str:
    precision = e["anger_precision"]
    shares = ", ".join(
        f"{k} {100 * s['predicted']:.0f} ({100 * s['true']:.0f})"
        for k, s in e["shares"].items()
    )
    return (
        f"| {name} | {100 * e['folded']['ua']:.1f} "
        f"| {100 * e['restricted']['ua']:.1f} | {e['ece']:.3f} "
        f"| {e['max_ratio']:.2f} ({e['max_ratio_label']}) "
        f"| {100 * e['foreign_share']:.1f}% "
        f"| {'n/a' if precision is None else f'{precision:.2f}'} "
        f"({e['anger_called']}) | {shares} |"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``python -m training held-out``)."""
    parser = argparse.ArgumentParser(
        prog="python -m training held-out", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "oof",
        type=Path,
        nargs="+",
        help="oof-PROTOCOL.npz of a training run (several: their mean, an ensemble)",
    )
    parser.add_argument(
        "--protocol",
        default=None,
        help="what the predictions are (default: from the file name, oof-PROTOCOL.npz)",
    )
    parser.add_argument(
        "--weighting",
        default="balanced",
        choices=WEIGHTINGS,
        help="the offsets' fit: every (corpus, class) cell alike (default) or every clip",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    protocol = args.protocol or args.oof[0].stem.removeprefix("oof-")
    try:
        report = load_oof(args.oof, protocol, args.weighting)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report) if args.json else table(report))
    return 0
