#!/usr/bin/env bash
# One prepared GPU check (see scripts/gpu_check.py): trains the fast preset in fp32 and mixed precision,
# torch and (where it imports) tinycudann encodings, meshes at 512^3, writes a table and renders.
#
#   scripts/gpu_check.sh DATASET_DIR OUT_DIR [options of scripts/gpu_check.py]
#
# Needs only a Python with torch, numpy, pillow, pyyaml, tqdm, scipy and scikit-image (a GPU node's stock
# PyTorch environment): the repository is put on PYTHONPATH, nothing is installed. PYTHON picks the
# interpreter (default: python3). Takes about 7 minutes on one H100-class GPU.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 DATASET_DIR OUT_DIR [--steps N] [--device cpu] ..." >&2
  exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" "$here/gpu_check.py" "$@"
