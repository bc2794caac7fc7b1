"""training.text_fa_decoder: Whisper base's decoder rebuilt in torch."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from streamser.recognition import features  # noqa: E402
from streamser.recognition.whisper_model import default_whisper_dir  # noqa: E402
from training.text_fa_decoder import (  # noqa: E402
    PROMPT,
    WhisperDecoder,
    load_decoder,
    pooled_states,
)
from training.whisper_prefix import read_weights  # noqa: E402

pytestmark = pytest.mark.train

TEXT = "نمی‌دونم از دست شما باید چی کار کنم."


def test_logits_are_ctranslate2s() -> None:
    """Teacher-forced logits equal CTranslate2's own on a Persian prompt."""
    import ctranslate2

    whisper = ctranslate2.models.Whisper(
        str(default_whisper_dir()), compute_type="float32", intra_threads=1
    )
    mel = features.log_mel(np.zeros(30 * 16000, dtype=np.float32))
    memory = features.encoder_states(whisper, [mel])[0]
    tokenizer = features.TextTokenizer(str(default_whisper_dir() / "tokenizer.json"))
    prefix = [*PROMPT, *tokenizer.encode(TEXT)[:4].tolist()]
    result = whisper.generate(
        ctranslate2.StorageView.from_array(memory[None]),
        [prefix],
        beam_size=1,
        max_length=len(prefix) + 3,
        return_logits_vocab=True,
        suppress_blank=False,
        suppress_tokens=[],
    )[0]
    # one row per step after the prompt: the text prefix, then what it generated
    want = np.asarray(result.logits[0], dtype=np.float32)
    sequence = [*PROMPT, *result.sequences_ids[0]]
    assert sequence[: len(prefix)] == prefix and len(want) >= len(prefix) - len(PROMPT)
    decoder = WhisperDecoder(
        read_weights(default_whisper_dir() / "model.bin", "decoder/"),
        torch.from_numpy(memory),
    )
    with torch.no_grad():
        _, logits = decoder(torch.tensor([sequence]))
    got = logits[0, len(PROMPT) - 1 : len(PROMPT) - 1 + len(want)].numpy()
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_pooled_states_ignore_batch_padding() -> None:
    decoder = load_decoder()
    texts = [TEXT, "خوبه", TEXT + " " + TEXT]
    together = pooled_states(texts, decoder)
    alone = pooled_states(texts[1:2], decoder)
    assert together.shape == (3, 8, 512)
    np.testing.assert_allclose(together[1], alone[0], atol=1e-4)
