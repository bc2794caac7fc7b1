"""The torch port of multilingual-e5-small (for fine-tuning) gives the runtime's vectors,
and its adapters start as a no-op and then learn."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from streamser.recognition.e5_onnx import (
    E5Embedder,
    E5File,
    build_graph,
)
from training.e5_torch import E5Encoder
from training.text_multi_tune import token_ids

TEXTS = [
    "Oh my God, he’s lost it. He’s totally lost it.",
    "دیگه نمی‎تونم تحمل کنم.",
    "Das ist ja unglaublich, ich freue mich so!",
    "Okay.",
]


def test_torch_port_matches_the_runtime_graph(e5_file: E5File) -> None:
    runtime = E5Embedder(e5_file, build_graph(e5_file, "fp32"))
    encoder = E5Encoder(e5_file, rank=4)  # adapters start at zero: no change
    batch = [token_ids(runtime.tokenizer, text) for text in TEXTS]
    assert batch == [runtime.ids(text)[0] for text in TEXTS]
    with torch.no_grad():
        ours = F.normalize(encoder(batch), dim=1).numpy()  # padded batch
    for text, vector in zip(TEXTS, ours, strict=True):
        assert float(vector @ runtime.embed(text)) > 0.9999, text


def test_only_the_adapters_learn(e5_file: E5File) -> None:
    torch.manual_seed(0)
    encoder = E5Encoder(e5_file, rank=2, targets=("v",))
    trainable = encoder.adapters()
    assert len(trainable) == 2 * len(encoder.layers)
    assert sum(p.numel() for p in trainable) < 0.01 * sum(
        b.numel() for b in encoder.buffers()
    )
    tokenizer = E5Embedder(e5_file, build_graph(e5_file, "fp32")).tokenizer
    batch = [token_ids(tokenizer, text) for text in TEXTS[:2]]
    with torch.no_grad():
        before = encoder(batch).numpy()
    frozen = encoder.layers[0].v.weight.clone()
    optimiser = torch.optim.SGD(trainable, lr=0.5)
    loss = (
        -F.normalize(encoder(batch), dim=1)[0] @ F.normalize(encoder(batch), dim=1)[1]
    )
    loss.backward()
    optimiser.step()
    with torch.no_grad():
        after = encoder(batch).numpy()
    assert torch.equal(encoder.layers[0].v.weight, frozen)
    assert not np.allclose(before, after, atol=1e-5)
