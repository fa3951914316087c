#!/usr/bin/env bash
# One-shot training of the default codec (comcnn-reccnn's RecCNN, from the bundled weights) on a
# lent GPU machine, which has PyTorch but not Ray, MLflow or facezip's other needs, and nothing to
# download from. Prepare here, in the repo root (all of it must travel in at most 64 MiB):
#
#   echo /.whl/ >> .git/info/exclude; echo /.gpu/ >> .git/info/exclude
#   scripts/gpu_one_shot.sh --prepare        # wheels into .whl/ (≈ 9.5 MiB), faces into .gpu/ (≈ 31 MiB)
#   # the tracked tree is ≈ 65 MiB, 63 of them the mean-scale-hyperprior rungs: move them out for the
#   # call (git stash does not; mv facezip/models/weights/mean-scale-hyperprior-l*.pt /tmp/) and back after
#
# then run on the device, carrying .whl and .gpu:   scripts/gpu_one_shot.sh MINUTES
# It writes $OUT/comcnn-reccnn.pt, $OUT/log.jsonl and $OUT/state.pt (copy state.pt back into .gpu/run
# to go on in a later call). FaceNet's identity term is off there (b = 0): its converted weights
# (≈ 46 MiB in fp16) and the faces do not both fit the transfer; the pixel term is λ·face-weighted MSE.
set -euo pipefail
if [ "${1:-}" = --prepare ]; then
  mkdir -p .whl .gpu
  platforms="--platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64"
  for pkg in compressai==1.2.8 pytorch-msssim==1.0.0 omegaconf==2.4.0 facenet-pytorch==2.5.3 pillow==13.0.0; do
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      $platforms -d .whl "$pkg"
  done
  python scripts/pack_faces.py .gpu/faces.parquet runs/train-lfw-tight runs/train-lfw-margin32 runs/train-celeba-tight
  exit 0
fi
MINUTES=${1:-8}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
mkdir -p .gpu/run
python3 scripts/train_on_gpu.py .gpu/faces.parquet .gpu/run --minutes "$MINUTES" --loader-workers 8 \
  train.precision=bf16 train.batch_size=32 train.crop_size=160 train.lr=0.0001 train.warmup_steps=30 \
  train.finetune.beta1=0.9 train.finetune.weight_decay=0 train.lmbda=2000 train.finetune.face_weight=2 \
  train.finetune.facenet_weight=0 train.trainable=[rec] train.val_fraction=0.03 train.log_every_steps=50
cp .gpu/run/comcnn-reccnn.pt .gpu/run/log.jsonl .gpu/run/state.pt "${OUT:-.gpu/run}/" 2>/dev/null || true
