"""Split an LFW folder by identity for training the bundled models without touching the test faces.

    python scripts/lfw_split.py ../shared/data/lfw-dev runs/lfw-split --eval-fold 1 --train-images 1500

writes ``<out>/train/<Name>/<Name>_NNNN.jpg`` (symlinks; people in no pair of the evaluation fold,
``--train-images`` of them spread evenly over the sorted list), ``<out>/eval/<Name>/…`` (symlinks to
the images the evaluation fold's pairs name, for ``facezip detect``) and ``<out>/eval-pairs.txt`` (that
fold alone, in pairs.txt's own format, for ``facezip evaluate … evaluate.pairs=…``). LFW's View-2
folds are person-disjoint, so no face of the evaluation fold is seen in training.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def fold_lines(pairs_file: Path, fold: int) -> tuple[list[str], int]:
    lines = pairs_file.read_text().splitlines()
    folds, per_fold = (int(v) for v in lines[0].split())
    if not 1 <= fold <= folds:
        raise SystemExit(f"{pairs_file}: has folds 1–{folds}, not {fold}")
    size = 2 * per_fold
    return lines[1 + (fold - 1) * size: 1 + fold * size], per_fold


def people(pair_line: str) -> set[str]:
    parts = pair_line.split()
    return {parts[0]} if len(parts) == 3 else {parts[0], parts[2]}


def pair_images(pair_line: str) -> set[str]:
    """``Name/Name_NNNN.jpg`` of both faces of a pairs.txt line."""
    parts = pair_line.split()
    named = [(parts[0], parts[1]), (parts[0], parts[2])] if len(parts) == 3 else [(parts[0], parts[1]),
                                                                                 (parts[2], parts[3])]
    return {f"{name}/{name}_{int(number):04d}.jpg" for name, number in named}


def link_all(images: list[Path], folder: Path) -> None:
    for image in images:
        link = folder / image.parent.name / image.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(image.resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lfw", type=Path, help="LFW folder with images/<Name>/ and pairs.txt")
    parser.add_argument("out", type=Path)
    parser.add_argument("--eval-fold", type=int, default=1)
    parser.add_argument("--train-images", type=int, default=1500)
    args = parser.parse_args()

    lines, per_fold = fold_lines(args.lfw / "pairs.txt", args.eval_fold)
    held_out = set().union(*(people(line) for line in lines))
    candidates = sorted(p for p in (args.lfw / "images").glob("*/*.jpg") if p.parent.name not in held_out)
    stride = max(1, len(candidates) // args.train_images)
    chosen = candidates[::stride][: args.train_images]
    link_all(chosen, args.out / "train")
    evaluated = sorted(set().union(*(pair_images(line) for line in lines)))
    link_all([args.lfw / "images" / name for name in evaluated], args.out / "eval")
    (args.out / "eval-pairs.txt").write_text(f"1 {per_fold}\n" + "\n".join(lines) + "\n")
    print(f"{len(chosen)} training images of people outside fold {args.eval_fold} "
          f"({len(held_out)} people held out) → {args.out / 'train'}; the {len(evaluated)} images of its pairs "
          f"→ {args.out / 'eval'}; pairs → {args.out / 'eval-pairs.txt'}")


if __name__ == "__main__":
    main()
