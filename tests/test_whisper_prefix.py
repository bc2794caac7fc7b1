"""training.whisper_prefix: Whisper base's first encoder layers as an int8 ONNX graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from streamser.recognition import features  # noqa: E402
from streamser.recognition.whisper_model import default_whisper_dir  # noqa: E402
from training.whisper_prefix import (  # noqa: E402
    PrefixRunner,
    WhisperPrefix,
    prefix_graph,
    read_encoder_weights,
)

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return read_encoder_weights(default_whisper_dir() / "model.bin")


@pytest.fixture(scope="module")
def mel(emodb_clips: list[Path]) -> np.ndarray:
    from training.datasets import load_audio

    return features.log_mel(load_audio(emodb_clips[0]))


def test_torch_prefix_is_the_real_encoder(
    weights: dict[str, np.ndarray], mel: np.ndarray
) -> None:
    """All six layers rebuilt in torch give CTranslate2's own encoder output."""
    import ctranslate2

    whisper = ctranslate2.models.Whisper(
        str(default_whisper_dir()), compute_type="float32"
    )
    want = features.encoder_states(whisper, [mel])[0]
    module = WhisperPrefix(weights, (6,)).eval()
    with torch.no_grad():
        got, lengths = module(torch.from_numpy(mel)[None], torch.tensor([len(mel)]))
    assert got.shape == (1, len(mel) // 2, 512) and int(lengths[0]) == len(mel) // 2
    np.testing.assert_allclose(got[0].numpy(), want, atol=2e-3)


def test_int8_graph_is_close_to_float_and_ignores_padding(
    weights: dict[str, np.ndarray], mel: np.ndarray, tmp_path: Path
) -> None:
    graph = prefix_graph(features.WHISPER_LAYERS, tmp_path)
    assert prefix_graph(features.WHISPER_LAYERS, tmp_path) == graph  # cached
    runner = PrefixRunner(graph, num_threads=1)
    states = runner.states(mel)
    module = WhisperPrefix(weights, (2, 3)).eval()
    with torch.no_grad():
        exact, _ = module(torch.from_numpy(mel)[None], torch.tensor([len(mel)]))
    assert states.shape == (len(mel) // 2, 1024)
    # int8 matrix products: small mean error (measured about 0.05 on unit-scale states)
    assert float(np.mean(np.abs(states - exact[0].numpy()))) < 0.1


def test_padding_is_masked(weights: dict[str, np.ndarray], mel: np.ndarray) -> None:
    """Beside a longer clip in a zero-padded batch, an utterance keeps its own states
    (the float module; the int8 graph takes its activation scale from the whole batch,
    so the runtime runs it one utterance at a time)."""
    module = WhisperPrefix(weights, (2, 3)).eval()
    batch = torch.zeros(2, len(mel) + 60, 80)
    batch[0, : len(mel)] = torch.from_numpy(mel)
    batch[1] = torch.randn(
        len(mel) + 60, 80, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        alone, _ = module(torch.from_numpy(mel)[None], torch.tensor([len(mel)]))
        padded, lengths = module(batch, torch.tensor([len(mel), len(mel) + 60]))
    assert lengths.tolist() == [len(mel) // 2, (len(mel) + 60) // 2]
    np.testing.assert_allclose(padded[0, : len(mel) // 2], alone[0], atol=1e-4)


def test_reader_rejects_what_it_cannot_read(tmp_path: Path) -> None:
    garbage = tmp_path / "model.bin"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a CTranslate2 Whisper model"):
        read_encoder_weights(garbage)
    with (default_whisper_dir() / "model.bin").open("rb") as real:
        garbage.write_bytes(real.read(200_000))
    with pytest.raises(ValueError, match="truncated"):
        read_encoder_weights(garbage)


def test_layers_must_exist(weights: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="outside 1..6"):
        WhisperPrefix(weights, (7,))
    with pytest.raises(ValueError, match="outside 1..6"):
        WhisperPrefix(weights, ())
