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


def test_torch_prefix_is_the_real_encoder(
    whisper_encoder_weights: dict[str, np.ndarray], emodb_mel: np.ndarray
) -> None:
    """All six layers rebuilt in torch give CTranslate2's own encoder output."""
    import ctranslate2

    whisper = ctranslate2.models.Whisper(
        str(default_whisper_dir()), compute_type="float32"
    )
    want = features.encoder_states(whisper, [emodb_mel])[0]
    module = WhisperPrefix(whisper_encoder_weights, (6,)).eval()
    with torch.no_grad():
        got, lengths = module(
            torch.from_numpy(emodb_mel)[None], torch.tensor([len(emodb_mel)])
        )
    assert (
        got.shape == (1, len(emodb_mel) // 2, 512)
        and int(lengths[0]) == len(emodb_mel) // 2
    )
    np.testing.assert_allclose(got[0].numpy(), want, atol=2e-3)


def test_int8_graph_is_close_to_float_and_ignores_padding(
    whisper_encoder_weights: dict[str, np.ndarray],
    emodb_mel: np.ndarray,
    tmp_path: Path,
) -> None:
    graph = prefix_graph(features.WHISPER_LAYERS, tmp_path)
    assert prefix_graph(features.WHISPER_LAYERS, tmp_path) == graph  # cached
    runner = PrefixRunner(graph, num_threads=1)
    states = runner.states(emodb_mel)
    module = WhisperPrefix(whisper_encoder_weights, (2, 3)).eval()
    with torch.no_grad():
        exact, _ = module(
            torch.from_numpy(emodb_mel)[None], torch.tensor([len(emodb_mel)])
        )
    assert states.shape == (len(emodb_mel) // 2, 1024)
    # int8 matrix products: small mean error (measured about 0.05 on unit-scale states)
    assert float(np.mean(np.abs(states - exact[0].numpy()))) < 0.1


def test_padding_is_masked(
    whisper_encoder_weights: dict[str, np.ndarray], emodb_mel: np.ndarray
) -> None:
    """Beside a longer clip in a zero-padded batch, an utterance keeps its own states
    (the float module; the int8 graph takes its activation scale from the whole batch,
    so the runtime runs it one utterance at a time)."""
    module = WhisperPrefix(whisper_encoder_weights, (2, 3)).eval()
    batch = torch.zeros(2, len(emodb_mel) + 60, 80)
    batch[0, : len(emodb_mel)] = torch.from_numpy(emodb_mel)
    batch[1] = torch.randn(
        len(emodb_mel) + 60, 80, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        alone, _ = module(
            torch.from_numpy(emodb_mel)[None], torch.tensor([len(emodb_mel)])
        )
        padded, lengths = module(
            batch, torch.tensor([len(emodb_mel), len(emodb_mel) + 60])
        )
    assert lengths.tolist() == [len(emodb_mel) // 2, (len(emodb_mel) + 60) // 2]
    np.testing.assert_allclose(padded[0, : len(emodb_mel) // 2], alone[0], atol=1e-4)


def test_reader_rejects_what_it_cannot_read(tmp_path: Path) -> None:
    garbage = tmp_path / "model.bin"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a CTranslate2 Whisper model"):
        read_encoder_weights(garbage)
    with (default_whisper_dir() / "model.bin").open("rb") as real:
        garbage.write_bytes(real.read(200_000))
    with pytest.raises(ValueError, match="truncated"):
        read_encoder_weights(garbage)


def test_layers_must_exist(whisper_encoder_weights: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="outside 1..6"):
        WhisperPrefix(whisper_encoder_weights, (7,))
    with pytest.raises(ValueError, match="outside 1..6"):
        WhisperPrefix(whisper_encoder_weights, ())
