"""``python -m export.text_graphs {en,fa} CHECKPOINT --out DIR``: export of the text
graphs that bring their own front end (``tokenizer`` field): the English MiniLM graph
(emotion + sentiment, ``export.text_en``) and the Persian character n-gram graph
(``export.text_fa``).

Both read ``token_ids`` and ``lengths`` like the Whisper-BPE text graphs; the runtime
makes the ids with the file the contract names (``streamser.recognition.text_front``).
Each export checks torch against onnxruntime on real rows and writes the card.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from export.text_en import export_en
from export.text_fa import export_fa
from training.command import start_command


def main(argv: list[str] | None = None) -> int:
    """``python -m export.text_graphs {en,fa} CHECKPOINT --out DIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m export.text_graphs", description=__doc__
    )
    parser.add_argument("language", choices=("en", "fa"))
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("artifacts/text-export"))
    parser.add_argument("--name")
    parser.add_argument(
        "--dev", default="meld-text:../shared/datasets/meld-text/dev.csv"
    )
    parser.add_argument("--int8", action="store_true", help="ship the int8 graph (en)")
    parser.add_argument("--train-command", default="")
    args = parser.parse_args(argv)
    args.export_command = start_command("python -m export.text_graphs", argv)
    args.work.mkdir(parents=True, exist_ok=True)
    result = export_en(args) if args.language == "en" else export_fa(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
