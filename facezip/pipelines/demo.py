"""A tiny dataset for ``facezip demo``, built from images that ship inside scikit-image.

It is the first stage of the bundled ``demo`` pipeline (``uses: demo-data``), so the demo runs
the same way locally and as a Ray Job on a cluster. No download: ``skimage.data``'s bundled
photos become a CLIC-style folder for pretraining, and its astronaut portrait plus faces of
``lfw_subset`` (25×25, upscaled) become an LFW-layout face database with a ``pairs.txt``.
Flips, crops and brightness changes turn a dozen photos into a few dozen images, enough to run
every stage end to end in minutes. Not a benchmark.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps
from skimage import data as skdata

from facezip.infra.storage import Storage, join
from facezip.tasks.stage import StageContext, StageSpec

PHOTO_SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
                 "retina", "camera", "coins", "moon", "brick", "gravel")
LFW_SIZE = 250  # LFW's image size
ASTRONAUT_NAME = "Eileen_Collins"  # the astronaut of skimage.data.astronaut
ASTRONAUT_FACE_CENTRE = (224, 117)  # MTCNN's box centre in the 512×512 photo
DEMO_PEOPLE = 10  # lfw_subset faces used as people, two views each (besides the astronaut's eight)
SAME_PAIRS = 10  # pairs.txt: one fold of this many same-person and as many different-person pairs


def demo_data(ctx: StageContext, people: int = DEMO_PEOPLE) -> dict[str, Any]:
    """Stage ``demo-data``: the dataset under the stage's output folder.

    ``people`` (``with: {people: N}``): fewer make every later stage quicker, e.g. in tests."""
    summary = build_demo_dataset(ctx.output, ctx.storage, people)
    ctx.log_metrics({"photos": summary["photo_count"], "faces": summary["face_count"]})
    return summary


DEMO_DATA_STAGE = StageSpec("demo-data", demo_data, None, result_keys=("photos", "faces", "photo_count", "face_count"),
                            uses_ray=False)


def build_demo_dataset(root: str, storage: Storage | None = None, people: int = DEMO_PEOPLE) -> dict[str, Any]:
    """Write ``<root>/photos`` (CLIC-style folder) and ``<root>/faces`` (LFW layout + pairs.txt).

    Returns their URIs and the number of images; deterministic, so reruns write the same bytes."""
    storage = storage or Storage()
    photos, faces = join(root, "photos"), join(root, "faces")
    photo_count = _write_all(storage, photos, _photos(), "png")
    views = _people(people)
    face_count = _write_all(storage, join(faces, "images"),
                            ((f"{name}/{name}_{i + 1:04d}", view) for name, person in views.items()
                             for i, view in enumerate(person)), "jpg")
    storage.write_bytes_atomic(join(faces, "pairs.txt"), _pairs_text(views).encode())
    return {"photos": photos, "faces": faces, "photo_count": photo_count, "face_count": face_count}


def _photos() -> Iterator[tuple[str, Image.Image]]:
    """Each bundled photo as is (at most 512 px), mirrored, and as a centre crop."""
    for name in PHOTO_SOURCES:
        image = Image.fromarray(getattr(skdata, name)()).convert("RGB")
        image.thumbnail((512, 512))
        width, height = image.size
        yield f"{name}", image
        yield f"{name}_mirrored", ImageOps.mirror(image)
        yield f"{name}_crop", image.crop((width // 8, height // 8, width - width // 8, height - height // 8))


def _people(count: int) -> dict[str, list[Image.Image]]:
    """The astronaut and ``count`` others → views of their face, LFW-like: 250×250, face in the middle."""
    if not 1 <= count <= 100:
        raise ValueError(f"demo-data: people must be 1 to 100 (lfw_subset has 100 faces), got {count}")
    people = {ASTRONAUT_NAME: list(_astronaut_views())}
    faces = skdata.lfw_subset()[:count]  # the first 100 of lfw_subset are faces
    for number, face in enumerate(faces, start=1):
        portrait = _on_canvas(Image.fromarray((face * 255).astype(np.uint8)).convert("RGB"))
        people[f"Demo_Person_{number:02d}"] = [portrait, ImageOps.mirror(portrait)]
    return people


def _astronaut_views() -> Iterator[Image.Image]:
    photo = Image.fromarray(skdata.astronaut())
    cx, cy = ASTRONAUT_FACE_CENTRE
    for side, brightness in ((230, 1.0), (250, 0.85), (270, 1.15), (300, 1.0)):
        left = min(max(cx - side // 2, 0), photo.width - side)
        top = min(max(cy - side // 2, 0), photo.height - side)
        view = photo.crop((left, top, left + side, top + side)).resize((LFW_SIZE, LFW_SIZE), Image.BICUBIC)
        view = ImageEnhance.Brightness(view).enhance(brightness)
        yield view
        yield ImageOps.mirror(view)


def _on_canvas(face: Image.Image) -> Image.Image:
    """A 25×25 face upscaled to 120 px on a grey 250×250 canvas: big enough for MTCNN."""
    canvas = Image.new("RGB", (LFW_SIZE, LFW_SIZE), (128, 128, 128))
    offset = (LFW_SIZE - 120) // 2
    canvas.paste(face.resize((120, 120), Image.BICUBIC), (offset, offset))
    return canvas


def _pairs_text(people: dict[str, list[Image.Image]]) -> str:
    """LFW's pairs.txt with one fold: ``name i j`` same-person, ``name1 i name2 j`` different."""
    others = [name for name in people if name != ASTRONAUT_NAME]
    astronaut_views = len(people[ASTRONAUT_NAME])
    same = [f"{ASTRONAUT_NAME}\t{i}\t{i + 1}" for i in range(1, astronaut_views, 2)]
    same += [f"{name}\t1\t2" for name in others][:SAME_PAIRS - len(same)]
    different = [f"{ASTRONAUT_NAME}\t{i + 1}\t{name}\t1" for i, name in enumerate(others[:SAME_PAIRS // 2])]
    different += [f"{a}\t2\t{b}\t2" for a, b in zip(others, others[1:])][:SAME_PAIRS - len(different)]
    return "\n".join([f"1\t{len(same)}", *same, *different]) + "\n"


def _write_all(storage: Storage, folder: str, images: Iterator[tuple[str, Image.Image]], suffix: str) -> int:
    count = 0
    for stem, image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG" if suffix == "png" else "JPEG", quality=95)
        storage.write_bytes_atomic(join(folder, f"{stem}.{suffix}"), buffer.getvalue())
        count += 1
    return count
