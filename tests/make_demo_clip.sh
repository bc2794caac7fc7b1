#!/usr/bin/env bash
# Writes streamser/assets/demo.wav: synthetic speech (espeak-ng), 16 kHz mono 16-bit,
# three sentences with pauses, for `streamser listen --demo` on machines without a
# microphone. No corpus audio is used. Needs Debian's espeak-ng and sox.
set -euo pipefail
out="$(dirname "$0")/../streamser/assets/demo.wav"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
espeak-ng -v en-us -s 150 -w "$tmp/1.wav" "I can't believe you did that again. This is unacceptable!"
espeak-ng -v en-us -s 130 -p 30 -w "$tmp/2.wav" "Well. I suppose it does not matter anymore."
espeak-ng -v en-us -s 175 -p 70 -w "$tmp/3.wav" "Oh wow, that is wonderful news, thank you so much!"
sox -n -r 22050 -c 1 "$tmp/silence.wav" trim 0.0 1.0
sox "$tmp/silence.wav" "$tmp/1.wav" "$tmp/silence.wav" "$tmp/2.wav" "$tmp/silence.wav" \
    "$tmp/3.wav" "$tmp/silence.wav" -r 16000 -b 16 -c 1 "$out"
echo "wrote $out"
