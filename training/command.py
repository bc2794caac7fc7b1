"""What the ``python -m training`` commands share: their parser and corpus options,
and the speaker-grouped protocols they evaluate with."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence

import torch

from training.datasets import Fold, Utterance, speaker_folds

PROTOCOL_HELP = "kfoldN or loso (default kfold5)"


def start_command(prog: str, argv: Sequence[str] | None) -> str:
    """Set up a training or export command (log lines, one torch thread) and return
    the command as it was run, for the card: ``prog`` and its arguments (``argv``, else
    those of the process after ``prog``'s words)."""
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    torch.set_num_threads(1)
    words = len(prog.split()) - 2  # "python -m" is not in sys.argv
    return f"{prog} " + shlex.join(sys.argv[words:] if argv is None else argv)


def command_parser(
    command: str, doc: str, *, data_help: str
) -> argparse.ArgumentParser:
    """The parser of ``python -m training COMMAND``: the first paragraph of ``doc`` as
    its description, and the repeatable ``--data KIND:PATH`` (``data_help``)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m training {command}", description=doc.split("\n\n")[0]
    )
    parser.add_argument("--data", action="append", required=True, help=data_help)
    return parser


def check_protocol(protocol: str) -> None:
    """Raises ValueError unless ``protocol`` is ``loso`` or ``kfoldN``."""
    if protocol != "loso" and not (
        protocol.startswith("kfold") and protocol[5:].isdigit()
    ):
        raise ValueError(
            f"unknown protocol {protocol!r}; use kfoldN (e.g. kfold5) or loso"
        )


def protocol_folds(
    utterances: Sequence[Utterance], protocol: str, seed: int
) -> list[Fold]:
    """Speaker-grouped folds of ``protocol`` (``loso``, or ``kfoldN`` seeded by ``seed``).

    Raises:
        ValueError: an unknown protocol.
    """
    check_protocol(protocol)
    if protocol == "loso":
        return speaker_folds(utterances, kind="loso")
    return speaker_folds(utterances, kind="kfold", k=int(protocol[5:]), seed=seed)
