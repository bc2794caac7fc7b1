"""Acoustic training: forward contract, masking, a few real training steps, folds."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training.acoustic_models import Ensemble, build_model  # noqa: E402

pytestmark = pytest.mark.train

SMALL = {
    "attn": {"n_labels": 4, "input_dim": 512, "hidden": 32, "embedding": 16, "pool": 4},
    "stats": {"n_labels": 4, "input_dim": 512, "hidden": 32, "embedding": 16},
    "cnn": {"n_labels": 4, "input_dim": 80, "channels": [4, 8], "embedding": 16},
    "cnn-lstm": {
        "n_labels": 4,
        "input_dim": 80,
        "channels": [4, 8],
        "embedding": 16,
        "lstm": 8,
    },
}


@pytest.mark.parametrize("arch", ["attn", "stats", "cnn", "cnn-lstm"])
def test_forward_contract_and_padding(arch: str) -> None:
    torch.manual_seed(0)
    config = SMALL[arch]
    model = build_model(arch, config).eval()
    dim = config["input_dim"]
    scaler = getattr(model, "scaler", None)
    if scaler is not None:  # non-trivial statistics, as after training
        scaler.set_statistics(torch.randn(dim), torch.rand(dim) + 0.5)
    x = torch.randn(3, 37, dim)
    lengths = torch.tensor([37, 21, 9], dtype=torch.int64)
    x = x * (torch.arange(37)[None, :, None] < lengths[:, None, None])
    probs, embedding = model(x, lengths)
    assert probs.shape == (3, 4)
    assert embedding.shape == (3, 16)
    assert torch.allclose(probs.sum(-1), torch.ones(3), atol=1e-5)
    # Extra zero padding after a row must not change its output.
    padded = torch.cat([x, torch.zeros(3, 15, dim)], dim=1)
    probs_padded, emb_padded = model(padded, lengths)
    tol = 1e-5 if arch != "cnn-lstm" else 5e-2  # BiLSTM runs back over padding
    assert torch.allclose(probs, probs_padded, atol=tol)
    if arch != "cnn-lstm":
        assert torch.allclose(embedding, emb_padded, atol=tol)
    # A row alone equals the same row in a batch.
    alone, _ = model(x[2:3, :9], lengths[2:3])
    assert torch.allclose(alone, probs[2:3], atol=tol)


@pytest.mark.parametrize("norm", ["layer", "std"])
def test_stats_head_pooled_norm_keeps_the_contract(norm: str) -> None:
    torch.manual_seed(0)
    model = build_model("stats", {**SMALL["stats"], "pooled_norm": norm}).eval()
    x, lengths = torch.randn(2, 11, 512), torch.tensor([11, 6])
    x = x * (torch.arange(11)[None, :, None] < lengths[:, None, None])
    probs, embedding = model(x, lengths)
    assert probs.shape == (2, 4) and embedding.shape == (2, 16)
    padded, _ = model(torch.cat([x, torch.zeros(2, 5, 512)], dim=1), lengths)
    assert torch.allclose(probs, padded, atol=1e-5)
    # "layer": a common shift and scale of an utterance's standardised means is gone
    if norm == "layer":
        scaled = torch.randn(1, 1024)
        moved = scaled.clone()
        moved[:, :512] = 3.0 * moved[:, :512] + 1.0
        assert torch.allclose(
            model._normalised(scaled), model._normalised(moved), atol=1e-4
        )
    with pytest.raises(ValueError, match="pooled_norm"):
        build_model("stats", {**SMALL["stats"], "pooled_norm": "bogus"})


def test_feature_masks_mask_summaries_as_they_mask_frames() -> None:
    from training.acoustic.data import summaries
    from training.acoustic.loop import spec_augment
    from training.acoustic.options import TrainOptions

    rng = np.random.default_rng(0)
    frames = rng.standard_normal((40, 16)).astype(np.float32)
    fill = torch.full((16,), 0.5)
    options = TrainOptions(feature_masks=2, feature_mask_width=5)
    masked = spec_augment(
        torch.from_numpy(frames)[None].clone(),
        torch.tensor([40]),
        options,
        np.random.default_rng(1),
        fill,
    )[0].numpy()
    summary = spec_augment(
        torch.from_numpy(summaries([[frames]])[0][0])[None].clone(),
        torch.tensor([2]),
        options,
        np.random.default_rng(1),
        fill,
    )[0].numpy()
    np.testing.assert_allclose(summary.mean(0), masked.mean(0), atol=1e-5)
    np.testing.assert_allclose(summary.std(0), masked.std(0), atol=1e-5)


def test_window_summary_is_the_exact_summary_of_a_window_in_range() -> None:
    from training.acoustic.data import summaries, window_summary

    rng = np.random.default_rng(0)
    frames = rng.standard_normal((120, 8)).astype(np.float32)
    whole = summaries([[frames]])[0][0]
    for seed in range(20):
        summary = window_summary(frames, (0.4, 1.5), np.random.default_rng(seed))
        mean, std = summary.mean(0), summary.std(0)
        # it summarises some window of 20 to 75 frames exactly
        found = [
            (start, length)
            for length in range(20, 76)
            for start in range(120 - length + 1)
            if np.allclose(frames[start : start + length].mean(0), mean, atol=1e-5)
            and np.allclose(frames[start : start + length].std(0), std, atol=1e-5)
        ]
        assert found, seed
    # an utterance shorter than the window is summarised whole
    short = frames[:10]
    np.testing.assert_allclose(
        window_summary(short, (0.4, 1.5), rng), summaries([[short]])[0][0], atol=1e-6
    )
    assert not np.allclose(whole, window_summary(frames, (0.4, 1.5), rng))


def test_stats_head_adapts_to_a_baseline() -> None:
    from training.acoustic.streams import pooled_vectors
    from training.acoustic_models import AdaptiveHead, adaptation_window

    torch.manual_seed(0)
    config = {**SMALL["stats"], "adaptation_window": 32}
    members = [build_model("stats", config).eval() for _ in range(2)]
    for member in members:
        member.scaler.set_statistics(torch.randn(512), torch.rand(512) + 0.5)
        member.pooled_scaler.set_statistics(torch.randn(1024), torch.rand(1024) + 0.5)
    model = members[0]
    assert adaptation_window(model) == 32
    x = torch.randn(3, 30, 512) * 3 + 1
    lengths = torch.tensor([30, 17, 5], dtype=torch.int64)
    x = x * (torch.arange(30)[None, :, None] < lengths[:, None, None])
    plain, _ = model.logits(x, lengths)
    head = AdaptiveHead(model)
    baseline = torch.randn(3, 1024).abs()
    none = torch.zeros(3)
    # No earlier utterance: exactly the unadapted head, whatever the baseline holds.
    probs, _, pooled = head(x, lengths, baseline, none)
    assert torch.allclose(probs, torch.softmax(plain, -1), atol=1e-6)
    # The pooled output is each row's raw frame mean and std (what training averages).
    want = pooled_vectors([x[i, : lengths[i]].numpy() for i in range(3)])
    np.testing.assert_allclose(pooled.numpy(), want, rtol=1e-4, atol=1e-4)
    # A baseline moves the result, more with more utterances behind it.
    one, _, _ = head(x, lengths, baseline, torch.ones(3))
    many, _, _ = head(x, lengths, baseline, torch.full((3,), 30.0))
    assert (one - probs).abs().max() > 1e-4
    assert ((many - probs).abs().sum(-1) > (one - probs).abs().sum(-1)).all()
    # Padding after a row changes nothing; members each map the raw baseline.
    padded = torch.cat([x, torch.zeros(3, 9, 512)], dim=1)
    again, _, pooled_again = head(padded, lengths, baseline, torch.ones(3))
    assert torch.allclose(again, one, atol=1e-5)
    assert torch.allclose(pooled_again, pooled, atol=1e-4)
    ensemble = AdaptiveHead(Ensemble(members))
    mixed, embedding, _ = ensemble(x, lengths, baseline, torch.ones(3))
    second = torch.softmax(
        members[1].logits(x, lengths, baseline, torch.ones(3))[0], -1
    )
    assert torch.allclose(mixed, (one + second) / 2, atol=1e-6)
    assert embedding.shape == (3, 32)


def test_stream_baselines_follow_each_speaker_in_order() -> None:
    from training.acoustic.streams import stream_baselines
    from training.datasets import Utterance

    utts = [
        Utterance(f"u{i}", None, "neutral", speaker, "emodb")
        for i, speaker in enumerate("aabbbab")
    ]
    pooled = np.arange(len(utts), dtype=np.float32)[:, None] * np.ones(
        (1, 4), np.float32
    )
    baselines, counts = stream_baselines(utts, pooled, window=2, seed=3)
    for speaker in "ab":
        rows = [i for i, u in enumerate(utts) if u.speaker == speaker]
        # within a speaker, counts are 0, 1, 2, 2, ... (the window caps them)
        assert sorted(counts[rows].tolist()) == [min(k, 2) for k in range(len(rows))]
        first = next(i for i in rows if counts[i] == 0)
        assert not baselines[first].any()
        second = next(i for i in rows if counts[i] == 1)
        np.testing.assert_array_equal(baselines[second], pooled[first])
    # the same seed gives the same streams
    again, _ = stream_baselines(utts, pooled, window=2, seed=3)
    np.testing.assert_array_equal(again, baselines)


def test_ensemble_averages_member_probabilities() -> None:
    torch.manual_seed(0)
    members = [build_model("attn", SMALL["attn"]).eval() for _ in range(2)]
    ensemble = Ensemble(members).eval()
    x, lengths = torch.randn(2, 12, 512), torch.tensor([12, 7])
    probs, embedding = ensemble(x, lengths)
    expected = (members[0](x, lengths)[0] + members[1](x, lengths)[0]) / 2
    assert torch.allclose(probs, expected, atol=1e-6)
    assert embedding.shape == (2, 32)


@pytest.mark.data
def test_features_cache_roundtrip(emodb_tiny: Path, tmp_path: Path) -> None:
    from streamser.recognition import features
    from training.daemon_path import daemon_audio, daemon_utterances, main_utterance
    from training.datasets import load_audio, load_dataset
    from training.features_cache import load_features

    utts = load_dataset(f"emodb:{emodb_tiny}")[:3]
    first = load_features(utts, "mel", cache_dir=tmp_path, progress=False)
    again = load_features(utts, "mel", cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("emodb-mel-c0-*.npz"))) == 1
    for a, b, utt in zip(first, again, utts, strict=True):
        np.testing.assert_array_equal(a, b)
        # the default view: the longest utterance the daemon's segmenter cuts
        cut = main_utterance(daemon_utterances(daemon_audio(utt.path)))
        assert cut is not None
        direct = features.log_mel(cut)
        np.testing.assert_allclose(a, direct, atol=2e-3)  # float16 storage
    whole = load_features(utts, "mel", cache_dir=tmp_path, progress=False, view="clip")
    assert len(list(tmp_path.glob("emodb-mel-c0-*.npz"))) == 2
    for a, utt in zip(whole, utts, strict=True):
        direct = features.log_mel(load_audio(utt.path))
        np.testing.assert_allclose(a, direct, atol=2e-3)
    augmented = load_features(utts, "mel", copy=1, cache_dir=tmp_path, progress=False)
    assert not np.allclose(augmented[0][:10], first[0][:10])


def test_g711_coding_round_trips_through_the_runtime_decoder() -> None:
    """What training codes, the runtime's decoder reads back at G.711 quality."""
    from streamser.audio.decode import AudioDecoder
    from training.features_cache import g711_encode

    rng = np.random.default_rng(0)
    audio = np.concatenate(
        [0.5 * rng.uniform(-1, 1, 16_000), 1e-2 * rng.uniform(-1, 1, 16_000)]
    ).astype(np.float32)
    coded = {codec: g711_encode(audio, codec) for codec in ("mulaw", "alaw")}
    assert coded["mulaw"] != coded["alaw"]
    for codec, payload in coded.items():
        assert len(payload) == audio.shape[0]  # one byte per sample
        decoded = AudioDecoder(codec, 16000, 1).decode(payload)
        for part in (slice(0, 16_000), slice(16_000, None)):  # loud and quiet
            noise = np.mean((decoded[part] - audio[part]) ** 2)
            snr_db = 10 * np.log10(np.mean(audio[part] ** 2) / noise)
            assert snr_db > 30, (codec, snr_db)


@pytest.mark.data
def test_telephone_copy_is_band_limited_speech(emodb_tiny: Path) -> None:
    from training.datasets import load_audio, load_dataset
    from training.features_cache import TELEPHONE, augment_audio, telephone_channel

    utt = load_dataset(f"emodb:{emodb_tiny}")[0]
    audio = load_audio(utt.path)
    phone = augment_audio(audio, utt.utt_id, 1, TELEPHONE)
    assert abs(phone.shape[0] - audio.shape[0]) <= 16  # resampled there and back
    alaw = telephone_channel(audio, "alaw")
    assert alaw.shape == phone.shape and not np.array_equal(alaw, phone)

    def share_above_4khz(x: np.ndarray) -> float:
        power = np.abs(np.fft.rfft(x)) ** 2
        return float(
            power[np.fft.rfftfreq(len(x), 1 / 16000) > 4100].sum() / power.sum()
        )

    assert share_above_4khz(audio) > 1e-3 and share_above_4khz(phone) < 1e-4
    same = np.corrcoef(audio[: phone.shape[0]], phone[: audio.shape[0]])[0, 1]
    assert same > 0.9  # the same speech, through the channel


def test_reverberant_copy_is_the_same_speech_in_a_room(emodb_tiny: Path) -> None:
    from training.datasets import load_audio, load_dataset
    from training.features_cache import AugmentOptions, augment_audio, room_response

    response = room_response(np.random.default_rng(0), 0.5)
    assert np.sum(response**2) == pytest.approx(1.0, rel=1e-5)
    assert np.argmax(np.abs(response)) == 0  # the direct sound comes first
    tail = response[1:] ** 2
    early, late = tail[: len(tail) // 10].sum(), tail[-len(tail) // 10 :].sum()
    assert late < 1e-3 * early  # 60 dB down by the end of rt60

    utt = load_dataset(f"emodb:{emodb_tiny}")[0]
    audio = load_audio(utt.path)
    room = AugmentOptions(
        speeds=(1.0,),
        gain_db=0.0,
        noise_probability=0.0,
        telephone_probability=0.0,
        reverb_probability=1.0,
        rt60_s=(0.6, 0.6),
    )
    wet = augment_audio(audio, utt.utt_id, 1, room)
    assert wet.shape == audio.shape and not np.allclose(wet, audio, atol=1e-3)
    assert 0.3 < np.corrcoef(audio, wet)[0, 1] < 0.999
    assert np.array_equal(wet, augment_audio(audio, utt.utt_id, 1, room))  # seeded


@pytest.mark.data
def test_train_and_evaluate_on_real_clips(emodb_tiny: Path, tmp_path: Path) -> None:
    from training import acoustic
    from training.acoustic.data import share

    options = acoustic.TrainOptions(epochs=2, batch_size=4, copies=1, seeds=(0,))
    data = acoustic.load_data([f"emodb:{emodb_tiny}"], "encoder", 1, telephone=True)
    # the states after Whisper base's layers 2 and 3, side by side
    assert data.copies[0][0].shape[1] == 2 * 512
    assert data.labels == ["anger", "happiness", "neutral", "sadness"]
    config = {
        "n_labels": len(data.labels),
        "input_dim": 1024,
        "hidden": 32,
        "embedding": 16,
        "pool": 4,
    }
    share(data, "attn", options, config)
    idx = np.arange(len(data.y))
    torch.manual_seed(0)  # train_one's initial weights
    before = build_model("attn", config).state_dict()
    state, epoch, val_ua = acoustic.train_one(
        "attn", config, idx[:8], idx[8:], options, seed=0
    )
    assert 1 <= epoch <= 2 and 0.0 <= val_ua <= 1.0
    assert any(not torch.equal(before[k], state[k]) for k in before if "weight" in k)
    # with the corpus adversary, the head alone is kept: its classifier is not exported
    adversarial = replace(options, corpus_adversary=1.0)
    state, _, _ = acoustic.train_one(
        "attn", config, idx[:8], idx[8:], adversarial, seed=0
    )
    assert state.keys() == before.keys()
    # the stats head trains on summaries, of random windows with crop_probability
    stats_config = {k: v for k, v in config.items() if k != "pool"}
    share(data, "stats", options, stats_config)
    torch.manual_seed(0)
    stats_before = build_model("stats", stats_config).state_dict()
    cropped = replace(options, crop_probability=1.0, crop_seconds=(0.2, 0.6))
    state, _, _ = acoustic.train_one(
        "stats", stats_config, idx[:8], idx[8:], cropped, seed=0
    )
    assert any(
        not torch.equal(stats_before[k], state[k]) for k in state if "weight" in k
    )
    share(data, "attn", options, config)
    report = acoustic.cross_validate(
        data, "attn", config, options, protocol="loso", jobs=1
    )
    assert report["folds"] == 3  # one per speaker
    emodb = report["per_corpus"]["emodb"]
    assert emodb["n"] == len(data.y)
    assert sum(map(sum, emodb["confusion"])) == len(data.y)
    # the held-out speakers scored again through the telephone channel
    assert report["per_corpus_telephone"]["emodb"]["n"] == len(data.y)


@pytest.mark.data
def test_whole_clip_model_scored_on_the_daemons_utterances(emodb_tiny: Path) -> None:
    from training import acoustic
    from training.acoustic.data import SHARED

    data = acoustic.load_data(
        [f"emodb:{emodb_tiny}"], "encoder", 1, view="clip", score_view="daemon"
    )
    daemon = acoustic.load_data([f"emodb:{emodb_tiny}"], "encoder", 1)
    assert len(data.scored) == len(data.y)
    for scored, cut in zip(data.scored, daemon.copies[0], strict=True):
        np.testing.assert_array_equal(scored, cut)
    # the daemon cuts each clip's utterance out of it: never more frames than the clip
    assert all(
        s.shape[0] <= c.shape[0]
        for s, c in zip(data.scored, data.copies[0], strict=True)
    )
    config = {
        "n_labels": len(data.labels),
        "input_dim": 1024,
        "hidden": 32,
        "embedding": 16,
    }
    options = acoustic.TrainOptions(epochs=1, batch_size=4, copies=1, seeds=(0,))
    report = acoustic.cross_validate(
        data, "stats", config, options, protocol="loso", jobs=1
    )
    assert report["per_corpus"]["emodb"]["n"] == len(data.y)
    inputs = SHARED["scored_inputs"]
    assert len(inputs) == len(data.y) and all(x.shape == (2, 1024) for x in inputs)


@pytest.mark.data
def test_cli_writes_checkpoint(emodb_tiny: Path, tmp_path: Path) -> None:
    from training.acoustic import main
    from training.acoustic_models import load_checkpoint_model

    code = main(
        [
            "--data",
            f"emodb:{emodb_tiny}",
            "--arch",
            "attn",
            "--protocol",
            "none",
            "--final",
            "--epochs",
            "1",
            "--config",
            '{"hidden": 16, "embedding": 8}',
            "--train",
            '{"copies": 1, "seeds": [0, 1], "batch_size": 4}',
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    path = tmp_path / "emotion-acoustic-v4.pt"
    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint["kind"] == "acoustic" and checkpoint["arch"] == "attn"
    assert checkpoint["front_end"]["type"] == "log-mel"
    assert tuple(checkpoint["front_end"]["encoder_layers"]) == (2, 3)
    assert len(checkpoint["ensemble"]) == 2
    assert "python -m training acoustic" in checkpoint["command"]
    model = load_checkpoint_model(checkpoint)
    probs, embedding = model(torch.randn(1, 50, 1024), torch.tensor([50]))
    assert probs.shape == (1, 4) and embedding.shape == (1, 16)

    # Export joins the Whisper prefix graph in front of the head: the runtime feeds
    # log-mel frames and gets what the head gives on the cached training features.
    from export.to_onnx import export_checkpoint
    from streamser.recognition import features
    from streamser.recognition.emotion import EmotionModels
    from training.datasets import load_audio, load_dataset
    from training.features_cache import load_features

    onnx_path = export_checkpoint(path, tmp_path / "models")
    card = json.loads(onnx_path.with_name(onnx_path.name + ".json").read_text("utf-8"))
    assert card["verification"]["max_abs_diff"] < 1e-4
    assert card["verification"]["joined"]["max_abs_diff"] < 1e-4
    assert [item["name"] for item in card["inputs"]] == ["features", "lengths"]
    assert card["inputs"][0]["shape"][-1] == 80
    models = EmotionModels.load(tmp_path / "models", device="cpu")
    assert models.acoustic_model.contract.front_end == features.WHISPER_LAYERS
    utts = load_dataset(f"emodb:{emodb_tiny}")[:3]
    mels = [features.log_mel(load_audio(u.path)) for u in utts]
    served = models.acoustic(mels)  # one zero-padded batch of three lengths
    states = load_features(utts, "encoder", progress=False, view="clip")
    for out, state in zip(served, states, strict=True):
        with torch.no_grad():
            want, _ = model(torch.from_numpy(state)[None], torch.tensor([len(state)]))
        got = np.array([out.scores.scores[label] for label in checkpoint["labels"]])
        np.testing.assert_allclose(got, want[0].numpy(), atol=2e-3)  # float16 cache


@pytest.mark.data
def test_adaptive_stats_model_from_training_to_runtime(
    adaptive_training: Path, emodb_tiny: Path
) -> None:
    """A head trained to adapt to the speaker (opt-in): LOSO reports streams, cold and
    skewed histories, export adds the baseline inputs and pooled output, and the
    runtime's adapted scores are the torch model's with the same baseline."""
    from streamser.recognition import features
    from streamser.recognition.adaptation import SpeakerBaseline
    from streamser.recognition.emotion import EmotionModels
    from training.acoustic_models import load_checkpoint_model
    from training.datasets import load_audio, load_dataset
    from training.features_cache import load_features

    out = adaptive_training
    checkpoint = torch.load(out / "emotion-acoustic-v4.pt", weights_only=False)
    assert checkpoint["arch"] == "stats"
    assert checkpoint["config"]["adaptation_window"] == 32
    assert {
        "emodb",
        "emodb cold",
        "emodb after calm history",
        "emodb after same-emotion history",
    } <= set(checkpoint["metrics"])
    onnx_path = out / "models" / "emotion-acoustic-v4.onnx"
    card = json.loads(onnx_path.with_name(onnx_path.name + ".json").read_text("utf-8"))
    assert [item["name"] for item in card["inputs"]] == [
        "features",
        "lengths",
        "baseline",
        "baseline_count",
    ]
    assert card["verification"]["max_abs_diff"] < 1e-4
    assert card["verification"]["joined"]["max_abs_diff"] < 1e-4
    models = EmotionModels.load(out / "models", device="cpu")
    assert models.acoustic_model.contract.adaptation_window == 32

    utts = load_dataset(f"emodb:{emodb_tiny}")[:3]
    mels = [features.log_mel(load_audio(u.path)) for u in utts]
    states = load_features(utts, "encoder", progress=False, view="clip")
    model = load_checkpoint_model(checkpoint)
    stream = SpeakerBaseline(32)
    served = []
    for mel in mels:  # one stream: each utterance against the ones before it
        out_row = models.acoustic([mel], [stream.snapshot()])[0]
        stream.add(out_row.pooled)
        served.append(out_row)
    assert stream.snapshot().count == 3
    cold = models.acoustic(mels)
    assert served[0].scores == cold[0].scores  # nothing before the first
    history: list[np.ndarray] = []
    for out_row, state in zip(served, states, strict=True):
        x, n = torch.from_numpy(state)[None], torch.tensor([len(state)])
        baseline = (
            torch.from_numpy(np.mean(history, 0))[None]
            if history
            else torch.zeros(1, 2048)
        )
        with torch.no_grad():
            logits, _ = model.logits(
                x, n, baseline, torch.tensor([float(len(history))])
            )
        want = torch.softmax(logits, -1)[0].numpy()
        got = np.array([out_row.scores.scores[k] for k in checkpoint["labels"]])
        np.testing.assert_allclose(got, want, atol=2e-3)  # float16 training cache
        np.testing.assert_allclose(
            out_row.pooled,
            np.concatenate([state.mean(0), state.std(0)]),
            rtol=2e-3,
            atol=2e-3,
        )
        history.append(out_row.pooled)


def test_cli_rejects_bad_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.acoustic import main

    assert main(["--data", f"nosuch:{tmp_path}"]) == 2
    assert "unknown dataset kind" in capsys.readouterr().err


def test_feature_kind_of_each_front_end() -> None:
    from streamser.recognition import features
    from training.features_cache import graph_input_kind, kind_of

    assert kind_of(features.WHISPER_LAYERS) == "encoder"  # what its head reads
    assert graph_input_kind(features.WHISPER_LAYERS) == "mel"  # what its graph reads
    assert graph_input_kind(features.WHISPER_ENCODER_TOP) == "encoder-top"
    assert features.WHISPER_LAYERS.runs_whisper_layers
    assert not features.LOG_MEL.runs_whisper_layers
    assert not features.WHISPER_ENCODER_TOP.runs_whisper_layers
    assert kind_of(features.LOG_MEL) == "mel"
    assert kind_of(features.WHISPER_ENCODER_TOP) == "encoder-top"
    assert kind_of(None) == "encoder-top"  # graphs from before FrontEnd
    from_metadata = features.FrontEnd.from_dict(
        {**features.WHISPER_LAYERS.to_dict(), "encoder_layers": [2, 3]}
    )
    assert kind_of(from_metadata) == "encoder"
    other_layers = features.FrontEnd(
        type="log-mel", encoder_layers=(1, 2), mel_level=0.0
    )
    assert kind_of(other_layers) == "encoder"  # the prefix graph computes any layers
    with pytest.raises(ValueError, match="front end"):
        kind_of(
            features.FrontEnd(
                type="log-mel", whisper="whisper-small", encoder_layers=(4,)
            )
        )


def test_front_end_of_a_training_run() -> None:
    from streamser.recognition import features
    from training.features_cache import front_end_of

    assert front_end_of("encoder") == features.WHISPER_LAYERS
    chosen = front_end_of("encoder", (1, 2), 0.0)
    assert chosen.encoder_layers == (1, 2) and chosen.mel_level == 0.0
    assert front_end_of("mel") == features.LOG_MEL
    with pytest.raises(ValueError, match="no Whisper layers"):
        front_end_of("mel", (2, 3))


def test_calibrated_head_scales_by_temperature_and_reads_affect() -> None:
    from training.acoustic_models import CalibratedHead, Ensemble, build_model

    torch.manual_seed(0)
    config = {"n_labels": 3, "input_dim": 8, "hidden": 8, "embedding": 4}
    members = [build_model("stats", {**config, "affect": True}) for _ in range(2)]
    x, lengths = torch.randn(2, 5, 8), torch.tensor([5, 3])
    plain = CalibratedHead(Ensemble(members).eval(), 1.0, affect=True).eval()
    sharp = CalibratedHead(Ensemble(members).eval(), 0.5, affect=True).eval()
    with torch.no_grad():
        p1, emb, affect = plain(x, lengths)
        p2, _, _ = sharp(x, lengths)
        mean = torch.stack(
            [torch.softmax(m.logits(x, lengths)[0], -1) for m in members]
        )
    torch.testing.assert_close(p1, mean.mean(0))
    want = torch.softmax(torch.log(mean.mean(0)) / 0.5, dim=-1)
    torch.testing.assert_close(p2, want)
    assert affect.shape == (2, 2) and bool((affect.abs() <= 1).all())
    assert emb.shape == (2, 8)


def test_temperature_fit_and_ece() -> None:
    from training.metrics import calibrate, fit_temperature, top_label_ece

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    logits = rng.standard_normal((400, 3))
    logits[np.arange(400), y] += 1.0
    true = calibrate(np.exp(logits), 1.0)
    # the same model made over-confident: the fit undoes it
    sharp = calibrate(true, 0.4)
    assert 2.0 < fit_temperature(sharp.astype(np.float32), y) < 3.0
    assert top_label_ece(
        calibrate(sharp, fit_temperature(sharp.astype(np.float32), y)), y
    ) < top_label_ece(sharp, y)


def test_gradient_reversal_flips_and_scales_the_gradient() -> None:
    from training.acoustic.loop import reverse_gradient

    x = torch.ones(3, requires_grad=True)
    (reverse_gradient(x, 0.5) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-0.5, -1.0, -1.5]))


def test_each_corpus_is_standardised_by_its_own_frames() -> None:
    from training.acoustic.data import TrainingData, normalise_by_corpus
    from training.datasets.base import Utterance

    rng = np.random.default_rng(0)
    utterances = [
        Utterance(f"{c}:{i}", None, "anger", f"{c}:s", c)
        for c in "ab"
        for i in range(3)
    ]
    # corpus b sits elsewhere (another channel): offset 5, scale 3
    scale = {"a": 1.0, "b": 3.0}
    frames = [
        (rng.normal(size=(n, 4)) * scale[u.corpus] + 5 * (u.corpus == "b"))
        for u, n in zip(utterances, (5, 17, 39, 8, 23, 30), strict=True)
    ]
    data = TrainingData(utterances, ["anger"], np.zeros(6, dtype=np.int64))
    data.copies = [
        [f.astype(np.float32) for f in frames],
        [
            (f + scale[u.corpus]).astype(np.float32)
            for f, u in zip(frames, utterances, strict=True)
        ],
    ]
    stds = {
        c: np.concatenate(frames[r]).std(0)
        for c, r in (("a", slice(0, 3)), ("b", slice(3, 6)))
    }
    normalise_by_corpus(data)
    for corpus, rows in (("a", slice(0, 3)), ("b", slice(3, 6))):
        clean = np.concatenate(data.copies[0][rows])
        assert np.allclose(clean.mean(0), 0, atol=1e-4), corpus
        assert np.allclose(clean.std(0), 1, atol=1e-4), corpus
        # every copy by the clean copy's statistics: the offset in standard units
        shifted = np.concatenate(data.copies[1][rows]).mean(0)
        assert np.allclose(shifted, scale[corpus] / stds[corpus], atol=1e-4), corpus
    # statistics of one label only: a corpus without it is refused
    with pytest.raises(ValueError, match="no neutral clips"):
        normalise_by_corpus(data, "neutral")
    normalise_by_corpus(data, "anger")  # every clip is anger: the same statistics
    assert np.allclose(np.concatenate(data.copies[0][:3]).std(0), 1, atol=1e-4)


def test_masked_loss_ignores_labels_a_corpus_lacks() -> None:
    from training.acoustic.loop import _loss

    logits = torch.tensor([[2.0, 0.0, 5.0]])
    target = torch.tensor([0])
    weights = torch.ones(3)
    allowed = torch.tensor([[True, True, False]])
    masked = _loss(logits, target, weights, 0.0, allowed)
    want = -torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[0]
    torch.testing.assert_close(masked, want)
    assert _loss(logits, target, weights, 0.0, None) > masked
