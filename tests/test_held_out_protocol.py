"""The held-out protocol report (label shares, anger precision, out-of-corpus
offsets), its rescoring command and the ship gate, on synthetic predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.acoustic.label_shift import PriorShift, estimate_priors, online_adaptation
from training.acoustic.offsets import Offsets, fit_offsets
from training.acoustic.report import held_out_scores
from training.acoustic.rescore import main as rescore_main
from training.acoustic.shares import label_shares
from training.gate import main as gate_main
from training.metrics import score

LABELS = ["anger", "happiness", "neutral", "sadness"]


def test_label_shares_flood_foreign_labels_and_anger_precision() -> None:
    reference = ["anger"] * 2 + ["calm"] * 4 + ["sadness"] * 4
    predicted = ["anger"] * 6 + ["neutral"] * 2 + ["fear"] * 2
    out = label_shares(reference, predicted)
    assert out["shares"]["neutral"] == {"true": 0.4, "predicted": 0.2}  # calm folded
    assert out["shares"]["anger"] == {"true": 0.2, "predicted": 0.6}
    assert out["max_ratio_label"] == "anger"
    assert out["max_ratio"] == pytest.approx(3.0)
    assert out["foreign_share"] == pytest.approx(0.2)  # fear: not in the corpus
    assert out["anger_precision"] == pytest.approx(2 / 6)
    assert out["anger_called"] == 6
    quiet = label_shares(["anger", "sadness"], ["sadness", "sadness"])
    assert quiet["anger_precision"] is None
    with pytest.raises(ValueError, match="as many"):
        label_shares(["anger"], [])


def _biased(
    rng: np.random.Generator, n: int, bias: np.ndarray, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of a model that ranks the true class up but adds ``bias``:
    ``softmax(scale * (x + bias))`` where ``softmax(2 * x)`` is the true posterior."""
    y = rng.integers(0, len(LABELS), n)
    logits = rng.normal(0.0, 1.0, (n, len(LABELS)))
    logits[np.arange(n), y] += 2.0
    z = scale * (logits + bias)
    p = np.exp(z - z.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True)).astype(np.float32), y


def _ua(probs: np.ndarray, y: np.ndarray) -> float:
    return score([LABELS[i] for i in y], [LABELS[i] for i in probs.argmax(1)]).ua


def test_offsets_undo_a_class_bias_and_an_overconfident_scale() -> None:
    rng = np.random.default_rng(0)
    bias = np.array([1.5, 0.0, -0.5, -1.0])  # floods anger
    probs, y = _biased(rng, 4000, bias, scale=4.0)  # twice too sharp
    fit = fit_offsets(probs, y)
    assert fit.temperature == pytest.approx(2.0, rel=0.1)
    assert np.asarray(fit.offsets) == pytest.approx(-2 * (bias - bias.mean()), abs=0.3)
    test_probs, test_y = _biased(rng, 4000, bias, scale=4.0)
    assert _ua(fit.apply(test_probs), test_y) > _ua(test_probs, test_y) + 0.05
    shifted = fit.apply(test_probs)
    assert np.allclose(shifted.sum(1), 1.0)
    assert Offsets.from_dict(json.loads(json.dumps(fit.to_dict()))) == fit
    with pytest.raises(ValueError, match="weighting"):
        fit_offsets(probs, y, weighting="prior")
    with pytest.raises(ValueError, match=r"\[N, L\]"):
        fit_offsets(probs[:0], y[:0])


def test_balanced_offsets_ignore_how_many_clips_each_class_has() -> None:
    rng = np.random.default_rng(1)
    probs, y = _biased(rng, 6000, np.zeros(len(LABELS)))
    keep = (y != 0) | (rng.random(len(y)) < 0.1)  # anger rare in the fit rows
    balanced = fit_offsets(probs[keep], y[keep])
    pooled = fit_offsets(probs[keep], y[keep], weighting="pooled")
    assert abs(balanced.offsets[0]) < 0.3  # the model was unbiased
    assert pooled.offsets[0] < balanced.offsets[0] - 0.5  # learns the rare prior


def _three_corpora(rng: np.random.Generator) -> dict[str, Any]:
    parts = [
        _biased(rng, 300, np.array(b))
        for b in ([2, 0, 0, -1], [1, 0, 0, 0], [0, 1, 0, 0])
    ]
    return {
        "probs": np.concatenate([p for p, _ in parts]),
        "y": np.concatenate([y for _, y in parts]),
        "corpora": np.repeat(np.array(["a", "b", "c"]), 300),
    }


def test_held_out_offsets_are_fit_on_the_other_corpora_only() -> None:
    rng = np.random.default_rng(2)
    d = _three_corpora(rng)
    own = {c: LABELS for c in "abc"}
    report = held_out_scores(
        d["probs"], d["y"], LABELS, d["corpora"], own, out_of_corpus=True
    )
    entry = report["held_out"]["a"]
    others = d["corpora"] != "a"
    expected = fit_offsets(d["probs"][others], d["y"][others], d["corpora"][others])
    assert entry["offsets_other_corpora"] == expected.to_dict()
    # the scored corpus's own predictions do not move its offsets
    changed = d["probs"].copy()
    changed[~others] = changed[~others][:, ::-1]
    again = held_out_scores(
        changed, d["y"], LABELS, d["corpora"], own, out_of_corpus=True
    )
    assert again["held_out"]["a"]["offsets_other_corpora"] == expected.to_dict()
    after = entry["with_offsets"]
    assert set(after) >= {"own", "restricted", "shares", "anger_precision", "ece"}
    assert entry["with_prior_shift"].keys() == after.keys()
    # the diagnosis: offsets fit on the scored corpus itself undo its own bias
    assert entry["with_own_offsets"]["own"]["ua"] >= entry["own"]["ua"]
    assert entry["with_own_offsets"]["max_ratio"] < entry["max_ratio"]
    assert entry["shares"]["anger"]["predicted"] > entry["shares"]["anger"]["true"]
    assert report["offsets"] == fit_offsets(d["probs"], d["y"], d["corpora"]).to_dict()
    plain = held_out_scores(d["probs"], d["y"], LABELS, d["corpora"], own)
    assert "with_offsets" not in plain["held_out"]["a"] and "offsets" not in plain


def _save_oof(path: Path, d: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = [f"{c}:{i}" for i, c in enumerate(d["corpora"])]
    np.savez(
        path,
        probs=d["probs"],
        affect=np.zeros(0),
        y=d["y"],
        ids=np.array(ids),
        labels=np.array(LABELS),
    )


def test_held_out_command_rescores_saved_predictions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _three_corpora(np.random.default_rng(3))
    _save_oof(tmp_path / "oof-loco.npz", d)
    assert rescore_main([str(tmp_path / "oof-loco.npz"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["protocol"] == "loco" and sorted(report["held_out"]) == [
        "a",
        "b",
        "c",
    ]
    assert "with_offsets" in report["held_out"]["b"]
    assert rescore_main([str(tmp_path / "oof-loco.npz")]) == 0
    text = capsys.readouterr().out
    assert "| a, offsets |" in text and "anger precision" in text
    assert rescore_main([str(tmp_path / "missing.npz")]) == 2
    assert "not found" in capsys.readouterr().err
    # two runs: their mean probabilities, an ensemble
    other = {**d, "probs": d["probs"][:, ::-1].copy()}
    _save_oof(tmp_path / "b" / "oof-loco.npz", other)
    both = [str(tmp_path / "oof-loco.npz"), str(tmp_path / "b" / "oof-loco.npz")]
    assert rescore_main([*both, "--json"]) == 0
    mean = held_out_scores(
        (d["probs"] + other["probs"]) / 2,
        d["y"],
        LABELS,
        d["corpora"],
        {c: LABELS for c in "abc"},
        out_of_corpus=True,
    )
    assert (
        json.loads(capsys.readouterr().out)["held_out"]["a"]["own"]
        == (mean["held_out"]["a"]["own"])
    )
    _save_oof(tmp_path / "c" / "oof-loco.npz", {**d, "corpora": d["corpora"][::-1]})
    assert rescore_main([both[0], str(tmp_path / "c" / "oof-loco.npz")]) == 2
    assert "other clips" in capsys.readouterr().err


def _entry(
    ua: float,
    ece: float = 0.05,
    anger: float = 0.25,
    foreign: float = 0.0,
    precision: float | None = 0.8,
) -> dict[str, Any]:
    """A held-out entry of four equally common labels; anger gets ``anger`` of clips."""
    rest = (1.0 - anger - foreign) / 3
    shares = {k: {"true": 0.25, "predicted": rest} for k in LABELS}
    shares["anger"]["predicted"] = anger
    if foreign:
        shares["fear"] = {"true": 0.0, "predicted": foreign}
    return {
        "folded": {"ua": ua},
        "restricted": {"ua": ua},
        "ece": ece,
        "foreign_share": foreign,
        "shares": shares,
        "anger_precision": precision,
    }


def _runs(
    tmp_path: Path,
    name: str,
    loco: dict[str, Any],
    kfold: dict[str, Any],
    seeds: int = 3,
) -> list[str]:
    paths = []
    for seed in range(seeds):
        for protocol, held_out in (("loco", loco), ("kfold5", kfold)):
            path = tmp_path / f"{name}-{protocol}-{seed}.json"
            report = {"protocol": protocol, "held_out": held_out}
            path.write_text(
                json.dumps({"train": {"seeds": [seed]}, "evaluation": report})
            )
            paths.append(str(path))
    return paths


GOOD_LOCO = {"x": _entry(0.60), "y": _entry(0.50)}
GOOD_KFOLD = {"x": _entry(0.90), "y": _entry(0.80)}
BASE_LOCO = {
    "x": _entry(0.55),
    "y": _entry(0.50),
}  # mean 52.5: the candidate's 55 beats it


@pytest.mark.parametrize(
    ("condition", "loco", "kfold", "seeds"),
    [
        (None, GOOD_LOCO, GOOD_KFOLD, 3),
        ("a", {"x": _entry(0.56), "y": _entry(0.50)}, GOOD_KFOLD, 3),
        ("b", {**GOOD_LOCO, "y": _entry(0.50, anger=0.40)}, GOOD_KFOLD, 3),
        ("b", {**GOOD_LOCO, "y": _entry(0.50, foreign=0.20)}, GOOD_KFOLD, 3),
        ("b", {**GOOD_LOCO, "y": _entry(0.50, precision=0.55)}, GOOD_KFOLD, 3),
        ("b", {**GOOD_LOCO, "y": _entry(0.50, precision=None)}, GOOD_KFOLD, 3),
        ("c", GOOD_LOCO, {**GOOD_KFOLD, "y": _entry(0.785)}, 3),
        ("d", {**GOOD_LOCO, "x": _entry(0.60, ece=0.12)}, GOOD_KFOLD, 3),
        ("seeds", GOOD_LOCO, GOOD_KFOLD, 1),
    ],
)
def test_gate_passes_only_when_every_condition_holds(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    condition: str | None,
    loco: dict[str, Any],
    kfold: dict[str, Any],
    seeds: int,
) -> None:
    argv = ["--candidate", *_runs(tmp_path, "cand", loco, kfold, seeds)]
    argv += ["--v2", *_runs(tmp_path, "v2", BASE_LOCO, GOOD_KFOLD)]
    argv += ["--v4", *_runs(tmp_path, "v4", BASE_LOCO, GOOD_KFOLD)]
    status = gate_main([*argv, "--json"])
    result = json.loads(capsys.readouterr().out)
    assert status == (0 if condition is None else 1)
    failed = [k for k, v in result["conditions"].items() if not v["pass"]]
    assert failed == ([] if condition is None else [condition])
    assert gate_main(argv) == status
    text = capsys.readouterr().out
    assert text.strip().endswith("gate: PASS" if condition is None else "gate: FAIL")


def test_gate_reads_rescored_predictions_and_rejects_bad_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _three_corpora(np.random.default_rng(4))
    reports = []
    for protocol in ("loco", "kfold5"):
        _save_oof(tmp_path / f"oof-{protocol}.npz", d)
        assert rescore_main([str(tmp_path / f"oof-{protocol}.npz"), "--json"]) == 0
        path = tmp_path / f"{protocol}.json"
        path.write_text(capsys.readouterr().out)
        reports.append(str(path))
    argv = ["--candidate", *reports, "--v2", *reports, "--v4", *reports]
    assert (
        gate_main([*argv, "--calibration", "prior-shift", "--min-seeds", "1"]) == 1
    )  # (a): no gain
    assert "FAIL (a)" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"evaluation": {"protocol": "loso"}}))
    assert gate_main(["--candidate", str(bad), "--v2", *reports, "--v4", *reports]) == 2
    assert "no held-out report" in capsys.readouterr().err


def test_online_priors_follow_the_traffic_within_bounds_and_never_see_ahead() -> None:
    rng = np.random.default_rng(5)
    probs, y = _biased(rng, 2000, np.zeros(len(LABELS)), scale=2.0)
    angry = (y == 0) | (rng.random(len(y)) < 0.2)  # traffic mostly anger
    probs, y = probs[angry], y[angry]
    source = np.full(len(LABELS), 0.25)
    order = rng.permutation(len(y))
    settings = PriorShift(bound=1.5)
    adapted = online_adaptation(probs, source, order, settings)
    assert np.allclose(
        adapted[order[: settings.warmup]], probs[order[: settings.warmup]]
    )
    prior = estimate_priors(probs, source, settings)
    assert prior[0] == pytest.approx(0.25 * 1.5)  # held at the bound, not beyond
    assert _ua(adapted, y) >= _ua(probs, y) - 0.01
    assert (adapted.argmax(1) == 0).mean() > (probs.argmax(1) == 0).mean()
    # a clip's score does not depend on the clips after it
    later = order[len(order) // 2 :]
    changed = probs.copy()
    changed[later] = np.roll(changed[later], 1, axis=1)
    again = online_adaptation(changed, source, order, settings)
    first = order[: len(order) // 2]
    assert np.allclose(again[first], adapted[first])
    with pytest.raises(ValueError, match="permutation"):
        online_adaptation(probs, source, order[1:])
    with pytest.raises(ValueError, match="source prior"):
        online_adaptation(probs, np.ones(len(LABELS)), order)
