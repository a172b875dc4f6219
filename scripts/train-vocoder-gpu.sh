#!/usr/bin/env bash
# Train the neural vocoder on one GPU, from audio folders to a float16 vocoder file: the recipe of
# the shipped vocoder (BENCHMARKS.md, "Stop 34", gives the corpus subset and the machine).
#   usage: scripts/train-vocoder-gpu.sh RUN_DIR CORPUS_FOLDER... [-- TRAIN_OVERRIDES...]
#   RUN_DIR/feats       features with their aligned waveforms (`--keep-wav`); ARCTIC `arctic_b*`
#                       prompts held out for validation, as in the real-speech bench
#   RUN_DIR/train       the training run (`configs/vocoder-h200.yaml`: a 7-minute budget)
#   RUN_DIR/vocoder.pt  the exported generator, float16
#   PYTHON              the interpreter that has clsvc (default python3)
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 RUN_DIR CORPUS_FOLDER... [-- TRAIN_OVERRIDES...]" >&2; exit 2; }
run=$1; shift
corpora=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do corpora+=("$1"); shift; done
[ $# -gt 0 ] && shift  # the "--"
py="${PYTHON:-python3}"
mkdir -p "$run"
"$py" -m clsvc preprocess "${corpora[@]}" --out "$run/feats" --keep-wav --holdout-regex 'arctic_b' --quiet
if [ -f "$run/train/checkpoints/last.pt" ]; then
    "$py" -m clsvc train --data "$run/feats" --out "$run/train" --resume "$@"
else
    "$py" -m clsvc train --config vocoder-h200 --data "$run/feats" --out "$run/train" "$@"
fi
"$py" -m clsvc export "$run/train/checkpoints/last.pt" "$run/vocoder.pt" --fp16 --force
