#!/usr/bin/env bash
# Train the neural vocoder on one GPU, from audio folders to a float16 vocoder file: the recipe of
# the shipped vocoder (BENCHMARKS.md, "Stop 34" and "Stop 35", give the corpus subset and the machine).
#   usage: scripts/train-vocoder-gpu.sh RUN_DIR CORPUS_FOLDER... [-- TRAIN_OVERRIDES...]
#   RUN_DIR/feats       features with their aligned waveforms (`--keep-wav`); ARCTIC `arctic_b*`
#                       prompts held out for validation, as in the real-speech bench
#   RUN_DIR/rec         with VC set: each utterance's mel rebuilt by that VC model beside its real
#                       waveform (`clsvc reconstruct`), trained on instead of RUN_DIR/feats
#   RUN_DIR/train       the training run (CONFIG; `vocoder-h200` has a 7-minute budget)
#   RUN_DIR/vocoder.pt  the exported generator, float16
# Environment:
#   PYTHON   the interpreter that has clsvc (default python3)
#   CONFIG   the training config (default vocoder-h200)
#   INIT     start from this vocoder's weights (`clsvc train --init`), e.g. to fine-tune
#   VC       fine-tune on this VC model's reconstructions (e.g. arctic)
# A second run with the same RUN_DIR resumes its training.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 RUN_DIR CORPUS_FOLDER... [-- TRAIN_OVERRIDES...]" >&2; exit 2; }
run=$1; shift
corpora=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do corpora+=("$1"); shift; done
[ $# -gt 0 ] && shift  # the "--"
py="${PYTHON:-python3}"
mkdir -p "$run"
"$py" -m clsvc preprocess "${corpora[@]}" --out "$run/feats" --keep-wav --holdout-regex 'arctic_b' --quiet
data="$run/feats"
if [ -n "${VC:-}" ]; then
    "$py" -m clsvc reconstruct --data "$run/feats" --checkpoint "$VC" --out "$run/rec" --quiet
    data="$run/rec"
fi
if [ -f "$run/train/checkpoints/last.pt" ]; then
    "$py" -m clsvc train --data "$data" --out "$run/train" --resume "$@"
else
    init=()
    [ -n "${INIT:-}" ] && init=(--init "$INIT")
    "$py" -m clsvc train --config "${CONFIG:-vocoder-h200}" --data "$data" --out "$run/train" "${init[@]}" "$@"
fi
"$py" -m clsvc export "$run/train/checkpoints/last.pt" "$run/vocoder.pt" --fp16 --force
