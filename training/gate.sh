#!/usr/bin/env bash
# The ship gate on five corpora: bash training/gate.sh [DATA_ROOT] [CANDIDATE_ARGS...]
# Runs v2's recipe, v4's recipe and a candidate (default: v4's recipe again; pass its
# `training acoustic` options after DATA_ROOT, with "seeds": [SEED] in its --train) with
# seeds 0, 1 and 2, each leave one corpus out and speaker-grouped 5-fold, then prints
# `python -m training gate`'s verdict and exits with its status. Calm and boredom are
# read as neutral (the default --labels fold). Time on a 2-core machine: a LOCO run
# takes 3 to 5 minutes and a 5-fold run 4 to 6 once the encoder features are cached,
# so the 18 runs take about 1.5 hours; the first run of each recipe extracts its
# features first (about 10 minutes a copy of the five corpora, three copies for v2's
# recipe).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-${STREAMSER_DATA:-../shared/datasets}}"
shift || true
py="${PYTHON:-python}"
out="${GATE_OUT:-artifacts/gate}"

five=(--data "emodb:$data/emodb" --data "ravdess:$data/ravdess" --data "ased:$data/ased"
    --data "emovo:$data/emovo" --data "rakshak:$data/rakshak")
# SEED is replaced by each run's seed
v4=(--arch stats --config '{"affect": true}' --mel-level 0
    --train '{"copies": 1, "mixup": 0.2, "feature_masks": 4, "feature_mask_width": 96, "seeds": [SEED]}')
# v2: whole clips, the clean copy and two augmented ones, no level, no mixup; scored,
# like every recipe, on the utterances the daemon cuts from each held-out clip
v2=(--arch stats --view clip --score-view daemon --train '{"copies": 3, "seeds": [SEED]}')
candidate=("$@")
[ ${#candidate[@]} -eq 0 ] && candidate=("${v4[@]}")

run() { # NAME PROTOCOL SEED ARGS...
    local name=$1 protocol=$2 seed=$3
    shift 3
    mkdir -p "$out"
    $py -m training acoustic "${five[@]}" "${@//SEED/$seed}" --no-telephone --jobs 1 \
        --protocol "$protocol" --out "$out/$name-$protocol-s$seed" --json \
        >"$out/$name-$protocol-s$seed.json"
}

for seed in 0 1 2; do
    for protocol in loco kfold; do
        run v2 "$protocol" "$seed" "${v2[@]}"
        run v4 "$protocol" "$seed" "${v4[@]}"
        run candidate "$protocol" "$seed" "${candidate[@]}"
    done
done
$py -m training gate --candidate "$out"/candidate-*-s?.json --v2 "$out"/v2-*-s?.json \
    --v4 "$out"/v4-*-s?.json
