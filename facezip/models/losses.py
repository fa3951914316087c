"""Training losses of the two phases (seed paper §4) and the MS-SSIM they share with validation.

Images are ``(N, 3, H, W)`` in [0, 1]. Each loss returns its terms separately (for logging)
with their weighted sum under ``"loss"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim
from torch import nn
from torchvision.ops import roi_align

from facezip.models.facenet import standardize
from facezip.models.masked_cvae import Discriminator

MS_SSIM_LEVELS = 5  # pytorch-msssim's default 5-scale weights (Wang et al. 2003)
FACENET_INPUT = 160  # InceptionResnetV1's training crop size


def ms_ssim_window(side: int) -> int:
    """The largest odd Gaussian window (≤ 11, the standard) that 5-scale MS-SSIM allows.

    pytorch-msssim downsamples 4 times and requires ``side > (win_size − 1) · 16``, so the
    standard 11×11 window needs sides above 160 px: 128 px crops get 7, 64 px crops get 3.
    Keeping all 5 scales (instead of dropping scales) keeps values comparable across crop sizes.
    """
    for window in range(11, 1, -2):
        if side > (window - 1) * 2 ** (MS_SSIM_LEVELS - 1):
            return window
    raise ValueError(f"MS-SSIM needs images larger than 32 px on their shorter side, got {side} "
                     "(raise train.crop_size)")


def ms_ssim_score(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean MS-SSIM of a batch in [0, 1] (1 = identical)."""
    return ms_ssim(x_hat, x, data_range=1.0, win_size=ms_ssim_window(min(x.shape[-2:])))


class PretrainLoss(nn.Module):
    """Phase 1: ``λ · (l1_weight · L1 + ms_ssim_weight · (1 − MS-SSIM))``; λ weighs the
    distortion against the rate for codecs that learn one (``facezip.models.losses.with_rate``)."""

    distortion = "l1+ms-ssim"  # the key of a codec's default λ for this loss (Codec.default_lmbda)

    def __init__(self, l1_weight: float = 1.0, ms_ssim_weight: float = 1.0, lmbda: float = 1.0) -> None:
        super().__init__()
        self.l1_weight, self.ms_ssim_weight = lmbda * l1_weight, lmbda * ms_ssim_weight

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor,
                boxes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        l1 = F.l1_loss(x_hat, x)
        ms_ssim_loss = 1.0 - ms_ssim_score(x_hat, x)
        loss = self.l1_weight * l1 + self.ms_ssim_weight * ms_ssim_loss
        return {"l1": l1, "ms_ssim_loss": ms_ssim_loss, "loss": loss}


class FaceNetLoss(nn.Module):
    """Phase 2, eq. 2: ``λ · a · L2(x, x̂) + b · L2(FaceNet(x_face), FaceNet(x̂_face))`` (λ = 1 in
    the paper; with a learned rate R the objective is R + λ·D + b·identity, ``with_rate``).

    ``boxes`` ``(N, 4)`` are the ground truth's MTCNN boxes ``[x1, y1, x2, y2]`` in pixels of
    ``x``; the same box cuts ``x`` and ``x̂`` and ``roi_align`` resizes both to FaceNet's
    160×160 input, differentiably. Pixel L2 is the mean squared error; embedding L2 is the squared
    Euclidean distance of the unit-length embeddings, ``2 − 2·cos``, averaged over the batch
    (a per-entry mean would divide it by 512 and drown it under the pixel term at a = b = 1).
    FaceNet must be frozen and in eval mode (``facezip.models.facenet.load_facenet``).

    ``face_weight`` w > 0 weighs the pixel term by an importance map, 1 + w on the face and 1 elsewhere
    (the face-mask loss of the masked-CVAE seed paper, softened): the face masks of the batch from
    detect's landmarks (``facezip.models.face_mask``) when it has them, else its face boxes.
    """

    distortion = "mse+facenet"

    def __init__(self, facenet: nn.Module | None, pixel_weight: float = 1.0, facenet_weight: float = 1.0,
                 lmbda: float = 1.0, face_weight: float = 0.0) -> None:
        super().__init__()
        if facenet is None and facenet_weight:
            raise ValueError("FaceNetLoss needs a FaceNet unless its weight b is 0")
        if facenet is not None and (facenet.training or any(p.requires_grad for p in facenet.parameters())):
            raise ValueError("FaceNetLoss needs a frozen FaceNet in eval mode (use load_facenet)")
        self.facenet, self.pixel_weight, self.facenet_weight = facenet, lmbda * pixel_weight, facenet_weight
        self.face_weight = face_weight

    def train(self, mode: bool = True) -> "FaceNetLoss":
        super().train(mode)
        if self.facenet is not None:
            self.facenet.eval()  # FaceNet stays in eval mode whatever mode the loss is put in
        return self

    def embed_faces(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        rois = torch.cat([torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype)[:, None], boxes], 1)
        faces = roi_align(images, rois, output_size=FACENET_INPUT, sampling_ratio=2, aligned=True)
        return self.facenet(standardize(faces))

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor, boxes: torch.Tensor | None = None,
                masks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if boxes is None:
            raise ValueError("FaceNetLoss needs the face boxes of the batch")
        pixel_l2 = F.mse_loss(x_hat, x) if not self.face_weight else self._face_weighted_l2(x_hat, x, boxes, masks)
        if self.facenet is None:  # b = 0: the pixel term alone, without FaceNet's cost
            return {"pixel_l2": pixel_l2, "loss": self.pixel_weight * pixel_l2}
        with torch.no_grad():
            target = self.embed_faces(x, boxes)
        facenet_l2 = (self.embed_faces(x_hat, boxes) - target).pow(2).sum(1).mean()
        return {"pixel_l2": pixel_l2, "facenet_l2": facenet_l2,
                "loss": self.pixel_weight * pixel_l2 + self.facenet_weight * facenet_l2}

    def _face_weighted_l2(self, x_hat: torch.Tensor, x: torch.Tensor, boxes: torch.Tensor,
                          masks: torch.Tensor | None) -> torch.Tensor:
        """The squared error with face pixels (``masks``, else inside each box) weighted ``1 + face_weight``,
        normalised so a uniform error gives the plain MSE."""
        if masks is None:
            rows = torch.arange(x.shape[-2], device=x.device, dtype=boxes.dtype)[None, :, None]
            cols = torch.arange(x.shape[-1], device=x.device, dtype=boxes.dtype)[None, None, :]
            masks = ((rows >= boxes[:, 1, None, None]) & (rows < boxes[:, 3, None, None])
                     & (cols >= boxes[:, 0, None, None]) & (cols < boxes[:, 2, None, None]))[:, None]
        weights = 1 + self.face_weight * masks.to(x.dtype)
        return ((x_hat - x).pow(2) * weights).sum() / (weights.sum() * x.shape[1])


class MaskedL1Loss(nn.Module):
    """masked-cvae's distortion in both phases: ``λ · L1_m(x, x̂)``, the mean absolute error over the
    pixels of ``masks`` (``(N, 1, H, W)`` in {0, 1}, from ``facezip.models.face_mask``; the whole image
    without), plus with ``adversarial_weight`` w: ``w · L_G``, DCGAN's generator loss
    ``−log D(x̂)`` against a discriminator that this loss trains, one Adam step (DCGAN's lr 2e-4,
    β1 0.5) on real ``x`` and fake ``x̂`` each time it is called with gradients on. The
    discriminator is each worker's own (not all-reduced) and not checkpointed: a resumed run starts
    it afresh."""

    distortion = "masked-l1"

    def __init__(self, lmbda: float = 1.0, adversarial_weight: float | None = None,
                 discriminator_lr: float = 2e-4) -> None:
        super().__init__()
        self.lmbda, self.adversarial_weight = lmbda, adversarial_weight
        self.discriminator = Discriminator() if adversarial_weight else None
        self.discriminator_optimizer = (torch.optim.Adam(self.discriminator.parameters(), lr=discriminator_lr,
                                                         betas=(0.5, 0.999)) if self.discriminator else None)

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor, boxes: torch.Tensor | None = None,
                masks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        weights = torch.ones_like(x[:, :1]) if masks is None else masks
        l1 = ((x_hat - x).abs() * weights).sum() / (weights.sum() * x.shape[1]).clamp_min(1)
        terms = {"masked_l1": l1, "loss": self.lmbda * l1}
        if self.discriminator is None:
            return terms
        if torch.is_grad_enabled():
            self._train_discriminator(x, x_hat.detach())
        logits = self.discriminator(x_hat)
        generator = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        return {**terms, "adversarial": generator, "loss": terms["loss"] + self.adversarial_weight * generator}

    def _train_discriminator(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
        loss = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.discriminator_optimizer.step()


def with_rate(terms: dict[str, torch.Tensor], bits: torch.Tensor, pixels: int,
              learned: bool) -> dict[str, torch.Tensor]:
    """Add the estimated rate ``R`` (bits per pixel) to a distortion loss when the codec learns it
    (``Codec.learns_rate``), in training and validation alike, so the best checkpoint is the best
    R + λ·D; a fixed-rate codec's loss stays the distortion alone."""
    bpp = bits.sum() / pixels
    if not learned:
        return {**terms, "bpp": bpp.detach()}
    return {**terms, "bpp": bpp, "distortion": terms["loss"], "loss": bpp + terms["loss"]}
