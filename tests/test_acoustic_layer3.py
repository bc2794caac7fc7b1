"""training.acoustic.layer3: Whisper's layer 3 with adapters, on cached layer-2 states."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from training.acoustic.layer3 import Layer3Front, residual_states  # noqa: E402
from training.datasets import load_dataset  # noqa: E402
from training.features_cache import compute_features  # noqa: E402
from training.whisper_prefix import WhisperPrefix  # noqa: E402

pytestmark = pytest.mark.train


def test_untrained_adapters_give_the_shipped_front_end(
    whisper_encoder_weights: dict[str, np.ndarray], emodb_mel: np.ndarray
) -> None:
    """Layer 3 with fresh adapters, on the residual stream after layer 2, computes
    what the whole prefix computes: the normed states after layers 2 and 3; padding
    beside a longer clip changes nothing and reads as zeros."""
    prefix = WhisperPrefix(whisper_encoder_weights, (2, 3)).eval()
    front = Layer3Front(whisper_encoder_weights, rank=8).eval()
    clip = torch.from_numpy(emodb_mel)[None]
    with torch.no_grad():
        want, lengths = prefix(clip, torch.tensor([len(emodb_mel)]))
        (residual,), _ = WhisperPrefix(whisper_encoder_weights, (2,)).residuals(
            clip, torch.tensor([len(emodb_mel)])
        )
        alone = front(residual, lengths)
        other = torch.randn(1, residual.shape[1] + 30, 512) * residual.std()
        batch = torch.zeros(2, residual.shape[1] + 30, 512)
        batch[0, : residual.shape[1]], batch[1] = residual[0], other[0]
        padded = front(batch, torch.tensor([residual.shape[1], batch.shape[1]]))
    np.testing.assert_allclose(alone.numpy(), want.numpy(), atol=1e-4)
    np.testing.assert_allclose(
        padded[0, : residual.shape[1]].numpy(), alone[0].numpy(), atol=1e-4
    )
    assert float(padded[0, residual.shape[1] :].abs().max()) == 0.0


def test_only_the_adapters_learn(
    whisper_encoder_weights: dict[str, np.ndarray], emodb_mel: np.ndarray
) -> None:
    front = Layer3Front(whisper_encoder_weights, rank=4)
    trainable = {n for n, p in front.named_parameters() if p.requires_grad}
    assert trainable == {
        f"layer.{name}.{part}"
        for name in ("qkv", "attention_out", "mlp_in", "mlp_out")
        for part in ("down", "up")
    }
    frozen = {k: v.clone() for k, v in front.state_dict().items() if "layer." in k}
    residual = torch.randn(2, 40, 512) * 3.0
    lengths = torch.tensor([40, 25])
    before = front(residual, lengths).detach()
    optimizer = torch.optim.SGD([p for p in front.parameters() if p.requires_grad], 0.1)
    front(residual, lengths)[:, :, 512:].pow(2).mean().backward()
    optimizer.step()
    after = front(residual, lengths).detach()
    for key, value in front.state_dict().items():
        if key in frozen and not key.endswith((".down", ".up")):
            assert torch.equal(value, frozen[key]), key
    assert torch.equal(after[:, :, :512], before[:, :, :512])  # layer 2 untouched
    assert not torch.allclose(after[:, :, 512:], before[:, :, 512:])
    assert (
        Layer3Front(whisper_encoder_weights, rank=0).layer.qkv.weight.requires_grad
        is False
    )


def test_cached_layer2_states_match_the_daemon_front_end(
    datasets: Path, tmp_path: Path, whisper_encoder_weights: dict[str, np.ndarray]
) -> None:
    """The cached residual stream, through layer 3, gives the int8 graph's features of
    the same daemon view (the graph quantises its products: a small mean error), and a
    second call reads the cache."""
    utts = load_dataset(f"emodb:{datasets / 'emodb'}")[:3]
    states = residual_states(utts, mel_level=0.0, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("emodb-layer2-residual-*.npz"))) == 1
    again = residual_states(utts, mel_level=0.0, cache_dir=tmp_path)
    front = Layer3Front(whisper_encoder_weights, rank=0).eval()
    from training.daemon_path import daemon_audio, daemon_view
    from training.features_cache import front_end_of

    for utt, state, cached in zip(utts, states, again, strict=True):
        np.testing.assert_array_equal(state, cached)
        shipped = compute_features(
            daemon_view(daemon_audio(utt.path)),
            "encoder",
            front_end_of("encoder", mel_level=0.0),
        )
        with torch.no_grad():
            ours = front(
                torch.from_numpy(state)[None], torch.tensor([len(state)])
            ).numpy()[0]
        assert ours.shape == shipped.shape
        assert float(np.mean(np.abs(ours - shipped))) < 0.1
