"""``python -m training COMMAND ...``: train, evaluate and compare emotion models.

Each command lives in its own module and exposes ``main(argv) -> int``.
"""

from __future__ import annotations

import importlib
import logging
import sys

COMMANDS = {
    "acoustic": (
        "training.acoustic",
        "train an acoustic emotion model (LOSO eval, save checkpoint)",
    ),
    "acoustic-layer3": (
        "training.acoustic.layer3",
        "measure fine-tuning Whisper's layer 3 (adapters) with v4's head under LOCO",
    ),
    "text": (
        "training.text",
        "train the transcript emotion model on ShEMO transcripts",
    ),
    "text-en": (
        "training.text_en",
        "train the English transcript model (emotion + sentiment) on MELD",
    ),
    "text-fa": (
        "training.text_fa",
        "train the Persian character n-gram transcript model on ShEMO",
    ),
    "text-multi": (
        "training.text_multi",
        "train the multilingual transcript model (e5 vectors; MELD + ShEMO)",
    ),
    "text-multi-tune": (
        "training.text_multi_tune",
        "measure fine-tuning e5 (low-rank adapters) on ShEMO's speaker folds",
    ),
    "fusion": ("training.fusion", "train the acoustic+text fusion model"),
    "baselines": ("training.baselines", "openSMILE / Whisper-encoder linear baselines"),
    "held-out": (
        "training.acoustic.rescore",
        "score saved out-of-fold predictions again (shares, anger precision, offsets)",
    ),
    "gate": ("training.gate", "the ship gate over several seeds' run reports"),
    "evaluate": (
        "training.evaluate",
        "evaluate exported ONNX graphs through the runtime",
    ),
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a command module."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        lines = ["usage: python -m training COMMAND [options]", "", "commands:"]
        lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
        stream = sys.stdout if args and args[0] in ("-h", "--help") else sys.stderr
        print("\n".join(lines), file=stream)
        if args and args[0] not in ("-h", "--help"):
            print(f"error: unknown command {args[0]!r}", file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    module = importlib.import_module(COMMANDS[args[0]][0])
    return int(module.main(args[1:]))


if __name__ == "__main__":
    sys.exit(main())
