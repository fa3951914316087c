"""Measure the identity-floor thresholds of each judge on LFW-dev pairs (development data only).

For each pair of one fold, the first face is JPEG-coded at several qualities and compared with
its original by every judge (dlib-resnet: distance, facenet: cosine). A decoded face is "still
matched as reliably as the uncompressed face" when swapping it in for its original does not
change the pair's verification outcome (dlib: its own 0.6 cut; facenet: the cut that is best
on the uncompressed pairs). The script prints, per judge, the outcome changes among decoded
faces whose measure is within each threshold, so a floor can be picked where they stay rare.

    python scripts/judge_thresholds.py ../shared/data/lfw-dev --fold 2 --out runs/judge-thresholds.json
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from facezip.models.recognizer import load_recognizer
from facezip.tasks.evaluate.identity import best_threshold

QUALITIES = (3, 5, 8, 12, 20, 40)


def read_pairs(root: Path, fold: int) -> list[tuple[Path, Path, bool]]:
    lines = (root / "pairs.txt").read_text().splitlines()[1:]
    per_fold = 600
    chosen = lines[(fold - 1) * per_fold : fold * per_fold]
    pairs = []
    for line in chosen:
        parts = line.split()
        a, b = ((parts[0], int(parts[1])), (parts[0], int(parts[2]))) if len(parts) == 3 else \
            ((parts[0], int(parts[1])), (parts[2], int(parts[3])))
        pairs.append((_image(root, *a), _image(root, *b), len(parts) == 3))
    return pairs


def _image(root: Path, name: str, number: int) -> Path:
    return root / "images" / name / f"{name}_{number:04d}.jpg"


def centre_crop(path: Path, size: int = 160) -> np.ndarray:
    rgb = np.asarray(Image.open(path).convert("RGB"))
    top, left = (rgb.shape[0] - size) // 2, (rgb.shape[1] - size) // 2
    return np.ascontiguousarray(rgb[top : top + size, left : left + size])


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def judge_report(judge, firsts, seconds, same, decoded_by_quality) -> dict:
    e1, e2 = judge.embed(firsts), judge.embed(seconds)
    original_scores = judge.score(judge.compare(e1, e2))
    cut = (judge.score(judge.same_person_threshold) if judge.same_person_threshold is not None
           else best_threshold(original_scores, same))
    original_ok = (original_scores >= cut) == same
    measures, changed = [], []
    for decoded in decoded_by_quality.values():
        d = judge.embed(decoded)
        measures.append(judge.compare(d, e1))
        changed.append(((judge.score(judge.compare(d, e2)) >= cut) == same) != original_ok)
    measures, changed = np.concatenate(measures), np.concatenate(changed)
    order = np.sort(measures) if judge.higher_is_better else np.sort(measures)[::-1]
    rows = []
    for threshold in np.quantile(order, np.linspace(0.0, 0.95, 20)):
        within = judge.passes(measures, threshold)
        rows.append({"threshold": round(float(threshold), 4), "faces_within": int(within.sum()),
                     "outcome_changed": round(float(changed[within].mean()), 4)})
    return {"judge": judge.name, "measure": judge.measure, "verification_cut": float(cut),
            "uncompressed_accuracy": round(float(original_ok.mean()), 4),
            "per_quality_mean": {q: round(float(m.mean()), 4) for q, m in
                                 zip(decoded_by_quality, np.split(measures, len(decoded_by_quality)))},
            "per_quality_changed": {q: round(float(c.mean()), 4) for q, c in
                                    zip(decoded_by_quality, np.split(changed, len(decoded_by_quality)))},
            "thresholds": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lfw", type=Path)
    parser.add_argument("--fold", type=int, default=2)
    parser.add_argument("--judges", default="dlib-resnet,facenet")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    pairs = read_pairs(args.lfw, args.fold)
    firsts = [centre_crop(a) for a, _, _ in pairs]
    seconds = [centre_crop(b) for _, b, _ in pairs]
    same = np.array([s for _, _, s in pairs])
    decoded = {q: [jpeg(face, q) for face in firsts] for q in QUALITIES}
    reports = [judge_report(load_recognizer(name), firsts, seconds, same, decoded) for name in args.judges.split(",")]
    text = json.dumps(reports, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
