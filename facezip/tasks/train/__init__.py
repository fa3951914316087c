"""The train stage: two-phase codec training on Ray Train, tracked in MLflow (issue 4).

Phase 1 ``pretrain`` on general photos (L1 + MS-SSIM), phase 2 ``finetune`` on detect's face
crops with the FaceNet identity loss (seed paper eq. 2). Entry point: ``run_train``.
"""

from facezip.tasks.train.runner import run_train

__all__ = ["run_train"]
