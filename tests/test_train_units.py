"""Train stage pieces that need no Ray Train run: losses, batches, resource checks, models:/ errors."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from facezip.infra.ray_runtime import quiet_state_api_users
from facezip.models import create_codec
from facezip.models.face_mask import centre_ellipse, face_mask
from facezip.models.facenet import load_facenet
from facezip.models.losses import FaceNetLoss, MaskedL1Loss, PretrainLoss, ms_ssim_score, ms_ssim_window
from facezip.models.metrics import batch_psnr
from facezip.models.registry import available_codecs, codec_class
from facezip.pipelines.config import load_config
from facezip.tasks.train.augment import AugmentConfig, FaceAugment, check_augment
from facezip.tasks.train.data import BatchMaker, _is_validation
from facezip.tasks.train.phases import get_phase, phase_names
from facezip.tasks.train.runner import SCRATCH, check_resources, starting_weights, with_codec_lmbda
from facezip.tasks.train.steps import make_loss, warm_up


def _png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(("side", "window"), [(64, 3), (128, 7), (160, 9), (161, 11), (256, 11)])
def test_ms_ssim_window_fits_five_scales(side, window):
    assert ms_ssim_window(side) == window
    x = torch.rand(1, 3, side, side)
    assert float(ms_ssim_score(x, x)) == pytest.approx(1.0, abs=1e-5)


def test_ms_ssim_window_rejects_tiny_crops():
    with pytest.raises(ValueError, match="train.crop_size"):
        ms_ssim_window(32)


def test_pretrain_loss_terms(astronaut):
    x = torch.from_numpy(astronaut[:128, :128]).permute(2, 0, 1)[None].float() / 255
    noisy = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    terms = PretrainLoss(l1_weight=2.0, ms_ssim_weight=1.0)(noisy, x)
    assert terms["loss"] == pytest.approx(float(2 * terms["l1"] + terms["ms_ssim_loss"]), rel=1e-6)
    assert 0.0 < float(terms["ms_ssim_loss"]) < 1.0
    assert float(PretrainLoss()(x, x)["loss"]) == pytest.approx(0.0, abs=1e-5)
    assert batch_psnr(noisy, x)[0] == pytest.approx(20.0, abs=1.5)  # σ = 0.1 noise ≈ 20 dB


def test_facenet_loss_sees_the_face_box_and_needs_frozen_facenet():
    facenet = load_facenet("none")
    x = torch.rand(2, 3, 64, 64)
    boxes = torch.tensor([[8.0, 8.0, 56.0, 56.0], [0.0, 0.0, 32.0, 40.0]])
    loss = FaceNetLoss(facenet, pixel_weight=1.0, facenet_weight=1.0)
    assert float(loss(x.clone(), x, boxes)["facenet_l2"]) == 0.0
    outside = x.clone()
    outside[1, :, 48:, 48:] = 0  # outside image 1's box: identity term unchanged
    assert float(loss(outside, x, boxes)["facenet_l2"]) == 0.0
    inside = x.clone()
    inside[:, :, 10:30, 10:30] = 0
    changed = loss(inside.requires_grad_(), x, boxes)
    assert float(changed["facenet_l2"].detach()) > 1e-6  # random FaceNet weights: small but not zero
    changed["loss"].backward()
    loss.train()
    assert not loss.facenet.training
    with pytest.raises(ValueError, match="frozen"):
        FaceNetLoss(facenet.train())
    # b = 0 needs no FaceNet (nor its weights): the pixel term alone
    pixels_only = FaceNetLoss(None, facenet_weight=0.0, lmbda=10.0)(inside, x, boxes)
    assert set(pixels_only) == {"pixel_l2", "loss"}
    assert float(pixels_only["loss"]) == pytest.approx(10 * float(((inside - x) ** 2).mean()))
    with pytest.raises(ValueError, match="needs a FaceNet unless its weight b is 0"):
        FaceNetLoss(None)


def test_the_face_weighted_pixel_term_follows_the_landmark_mask_else_the_box():
    x = torch.rand(1, 3, 32, 32)
    boxes = torch.tensor([[0.0, 0.0, 16.0, 32.0]])  # the left half
    masks = torch.zeros(1, 1, 32, 32)
    masks[..., 16:] = 1  # the right half
    error_right = x.clone()
    error_right[..., 16:] += 0.1
    loss = FaceNetLoss(None, facenet_weight=0.0, face_weight=3.0)
    plain = float(((error_right - x) ** 2).mean())
    assert float(loss(error_right, x, boxes)["pixel_l2"]) == pytest.approx(plain * 2 / 5)  # weights 4 | 1
    assert float(loss(error_right, x, boxes, masks)["pixel_l2"]) == pytest.approx(plain * 8 / 5)


def test_batch_maker_pretrain_crops_and_finetune_boxes(astronaut):
    small = astronaut[:40, :50]  # smaller than the crop: reflect-padded, not refused
    batch = {"image_bytes": np.array([_png(astronaut), _png(small)], dtype=object)}
    images, boxes, masks = BatchMaker("pretrain", 64, 10**8)(batch, training=True)
    assert images.shape == (2, 3, 64, 64) and boxes is None and masks is None
    val_a, _, _ = BatchMaker("pretrain", 64, 10**8)(batch, training=False)
    val_b, _, _ = BatchMaker("pretrain", 64, 10**8)(batch, training=False)
    assert torch.equal(val_a, val_b)  # validation crops are fixed

    face = {"image_bytes": np.array([_png(astronaut[:160, :160])], dtype=object),
            "face_box_in_crop": np.array([[40.0, 20.0, 120.0, 140.0]])}
    images, boxes, masks = BatchMaker("finetune", 64, 10**8)(face, training=True)
    assert images.shape == (1, 3, 64, 64) and masks is None
    torch.testing.assert_close(boxes, torch.tensor([[16.0, 8.0, 48.0, 56.0]]))


def test_batch_maker_gives_face_masks_from_landmarks_or_the_centre_ellipse(astronaut):
    """Landmarks of a 200 px region (original pixels) resized to 64 px: the same mask as face_mask's."""
    points = np.array([[55, 70], [105, 70], [80, 95], [60, 120], [100, 120]], dtype=float) * 1.25 + [10, 20]
    rows = {"image_bytes": np.array([_png(astronaut[:160, :160])] * 2, dtype=object),
            "face_box_in_crop": np.array([[40.0, 20.0, 120.0, 140.0]] * 2),
            "landmarks": np.array([points.ravel(), None], dtype=object),
            "crop_box": np.array([[10, 20, 210, 220], None], dtype=object)}
    _, _, masks = BatchMaker("finetune", 64, 10**8, masks=True)(rows, training=True)
    assert masks.shape == (2, 1, 64, 64)
    expected = face_mask(64, 64, (points - [10, 20]) * 64 / 200)
    assert expected.fallback is None and torch.equal(masks[0, 0], torch.from_numpy(expected.mask).float())
    assert torch.equal(masks[1, 0], torch.from_numpy(centre_ellipse(64, 64)).float())


def test_face_augmentation_keeps_the_face_box_whole_and_is_seeded(astronaut):
    """Random windows around the whole face box, flips and jitter; the same generator seed, the
    same faces; validation is never augmented."""
    crop = torch.from_numpy(astronaut[:160, :160].copy()).permute(2, 0, 1).float() / 255
    box = np.array([40.0, 20.0, 120.0, 140.0], dtype=np.float32)
    runs = [FaceAugment(AugmentConfig(min_window=0.5), 64, torch.Generator().manual_seed(7)) for _ in range(2)]
    outputs = [[augment(crop, box, torch.ones(1, 160, 160)) for _ in range(20)] for augment in runs]
    for (image, moved, mask), (again, moved_again, _) in zip(*outputs):
        assert image.shape == (3, 64, 64) and mask.shape == (1, 64, 64)
        assert torch.equal(image, again) and np.array_equal(moved, moved_again)
        assert 0 <= image.min() and image.max() <= 1
        assert (moved >= 0).all() and (moved <= 64).all() and moved[2] - moved[0] >= 80 * 64 / 160 - 1
    assert len({tuple(moved.round(1)) for _, moved, _ in outputs[0]}) > 10  # the windows vary
    plain = FaceAugment(AugmentConfig(min_window=1, aspect=0, flip=False, colour=0), 64)
    image, moved, _ = plain(crop, box)
    np.testing.assert_allclose(moved, box * 64 / 160, atol=1e-4)
    flipped = FaceAugment(AugmentConfig(min_window=1, aspect=0, flip=True, colour=0), 64)
    mirrored = [out for out in (flipped(crop, box) for _ in range(10)) if not torch.equal(out[0], image)]
    assert mirrored and torch.equal(mirrored[0][0], image.flip(-1))
    np.testing.assert_allclose(mirrored[0][1], [64 - 48.0, 8.0, 64 - 16.0, 56.0], atol=1e-4)

    face = {"image_bytes": np.array([_png(astronaut[:160, :160])], dtype=object),
            "face_box_in_crop": np.array([[40.0, 20.0, 120.0, 140.0]])}
    augmented = BatchMaker("finetune", 64, 10**8, augment=AugmentConfig())
    images, boxes, _ = augmented(face, training=True)
    assert images.dtype == boxes.dtype == torch.float32  # FaceNet's roi_align takes both in one type
    assert torch.equal(augmented(face, training=False)[0], BatchMaker("finetune", 64, 10**8)(face, training=False)[0])
    with pytest.raises(ValueError, match=r"train.augment.min_window must be in \(0, 1\], got 0"):
        check_augment(AugmentConfig(min_window=0))


def test_validation_split_follows_dataset_split_else_hash():
    assert _is_validation("x", "test", 0.0) and not _is_validation("x", "train", 1.0)
    held_out = sum(_is_validation(f"img{i}", None, 0.25) for i in range(2000))
    assert 400 < held_out < 600


def test_too_many_workers_fail_fast(ray_local):
    cfg = load_config([], ["train.num_workers=5", "train.cpus_per_worker=1.0"])
    with pytest.raises(ValueError, match=r"train.num_workers=5 .* needs 5 CPUs but the Ray cluster has 2"):
        check_resources(cfg.train)
    check_resources(load_config([], ["train.num_workers=2", "train.cpus_per_worker=0.5"]).train)
    with pytest.raises(ValueError, match="train.max_minutes must be positive"):
        check_resources(load_config([], ["train.max_minutes=0"]).train)


def test_registered_model_errors(tmp_path, monkeypatch):
    import mlflow

    from facezip.models.loading import load_codec

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(ValueError, match="cannot fetch models:/nobody/1"):
        load_codec("binarized-cae", "models:/nobody/1")


@pytest.mark.parametrize("phase", ["pretrain", "finetune"])
def test_phase_loss_on_a_fixed_batch_goes_down(astronaut, phase):
    """A few Adam steps of L1 + MS-SSIM (phase 1) or eq. 2 (phase 2) on one fixed face batch:
    deterministic, unlike the 3-step Ray runs of test_train.py, whose batches come in any order."""
    torch.manual_seed(0)
    codec = create_codec("binarized-cae").train()
    loss_fn = PretrainLoss() if phase == "pretrain" else FaceNetLoss(load_facenet("none"), pixel_weight=1.0,
                                                                     facenet_weight=1.0)
    face = torch.from_numpy(astronaut[37:197, 144:304].copy()).permute(2, 0, 1).float().div(255)
    x = torch.stack([face, face.flip(-1)])
    boxes = torch.tensor([[30.0, 20.0, 130.0, 140.0]] * 2)
    optimizer = torch.optim.Adam(codec.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        terms = loss_fn(codec(x)["x_hat"], x, boxes)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(float(terms["loss"]))
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("codec_name, overrides, weight", [
    ("binarized-cae", [], 1.0),                                   # eq. 2 / L1 + MS-SSIM as they are
    ("mean-scale-hyperprior", [], 32.0),                          # the codec's pretraining λ
    ("mean-scale-hyperprior", ["train.lmbda=100"], 100.0)])
def test_rate_weight_is_the_codecs_default_unless_configured(codec_name, overrides, weight):
    cfg = load_config([], overrides)
    resolved = with_codec_lmbda(cfg, create_codec(codec_name), "pretrain")
    assert resolved.train.lmbda == weight and cfg.train.lmbda == (None if not overrides else weight)
    loss = make_loss("pretrain", resolved.train, torch.device("cpu"))
    assert loss.l1_weight == pytest.approx(weight * cfg.train.pretrain.l1_weight)


def test_warmup_ramps_the_lr_from_the_global_step_and_then_holds_it():
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    lrs = []
    for step in (0, 1, 3, 4, 10):  # a resumed run calls it with its restored global step
        warm_up(optimizer, step, warmup_steps=4)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([2.5e-4, 5e-4, 1e-3, 1e-3, 1e-3])
    warm_up(optimizer, 0, warmup_steps=0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_a_local_ray_without_dashboard_silences_the_placement_group_cleaners_warning():
    """Without the dashboard the state API is down, and Ray Train's cleaner warns every second."""
    from ray.train.v2._internal.execution.controller import placement_group_cleaner

    placement_group_cleaner.logger.setLevel(logging.NOTSET)
    assert placement_group_cleaner.logger.isEnabledFor(logging.WARNING)
    quiet_state_api_users()  # the worker_process_setup_hook of init_ray's local Ray
    assert not placement_group_cleaner.logger.isEnabledFor(logging.WARNING)


@pytest.mark.parametrize("phase", ["pretrain", "finetune"])
def test_masked_cvae_trains_on_its_masked_loss_in_both_phases(phase):
    codec = create_codec("masked-cvae")
    resolved = with_codec_lmbda(load_config([], ["train.masked.adversarial=true"]), codec, phase)
    loss = make_loss(phase, resolved.train, torch.device("cpu"), codec)
    assert isinstance(loss, MaskedL1Loss) and loss.lmbda == 200.0 and loss.adversarial_weight == 10.0
    plain = with_codec_lmbda(load_config([], []), codec, phase)
    assert make_loss(phase, plain.train, torch.device("cpu"), codec).discriminator is None  # off by default


def test_codecs_key_their_default_lmbda_by_a_loss_they_train_on():
    """The models layer knows losses, not phases: a codec's λ is per distortion, a phase picks the distortion."""
    distortions = {PretrainLoss.distortion, FaceNetLoss.distortion, MaskedL1Loss.distortion}
    for name in available_codecs():
        assert set(codec_class(name).default_lmbda) <= distortions, name
    assert {get_phase(name).distortion for name in phase_names()} <= distortions


@pytest.mark.parametrize("phase, init, start", [
    ("finetune", None, ("bundled", 2, None)),  # the codec reference, its level included
    ("finetune", "w.pt", ("w.pt", None, None)),
    ("pretrain", None, None),
    ("finetune", SCRATCH, None),
])
def test_training_starts_from_init_else_the_codec_reference_of_the_config(phase, init, start):
    cfg = load_config([], ["codec.name=mean-scale-hyperprior", "codec.level=2"])
    assert starting_weights(cfg, phase, init) == start
