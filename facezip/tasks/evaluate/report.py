"""The evaluation's files: every row as CSV and JSON, Bjøntegaard deltas, and the Markdown
tables in the seed paper's layout (per-image mean / max / min)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence

from facezip.tasks.evaluate.bdrate import bd_quality, bd_rate
from facezip.tasks.evaluate.codecs import REFERENCE

ROW_COLUMNS = ("label", "codec", "setting", "key", "identity", "source", "status", "error", "height", "width",
               "bytes", "bpp", "ratio_raw", "ratio_source", "psnr", "ms_ssim", "ssim", "l1", "l2", "face_psnr",
               "face_ms_ssim", "face_ssim", "face_l1", "cosine", "face_found")
# BD metric name → the level-summary column holding its quality value
BD_COLUMNS = {"psnr": "psnr_mean", "ms_ssim": "ms_ssim_mean", "ssim": "ssim_mean", "cosine": "cosine_mean",
              "face_psnr": "face_psnr_mean", "face_ms_ssim": "face_ms_ssim_mean"}


def accuracy_column(has_pairs: bool) -> str:
    return "verification_accuracy" if has_pairs else "nn_accuracy"


def bjontegaard(summaries: Sequence[dict], anchors: Sequence[str], metrics: Sequence[str],
                has_pairs: bool) -> list[dict]:
    """BD-rate and BD-quality of every codec curve against each anchor, one row per (codec, anchor,
    metric). An anchor that was not measured in the run gives no rows (``missing_anchors``)."""
    columns = {**BD_COLUMNS, "accuracy": accuracy_column(has_pairs)}
    unknown = [m for m in metrics if m not in columns]
    if unknown:
        raise ValueError(f"evaluate.bd_metrics: unknown metric(s) {unknown} (use {', '.join(columns)})")
    curves = _curves(summaries)
    return [_bd_row(codec, levels, anchor, curves[anchor], metric, columns[metric])
            for anchor in anchors if anchor in curves
            for codec, levels in curves.items() if codec not in (anchor, REFERENCE)
            for metric in metrics]


def missing_anchors(summaries: Sequence[dict], anchors: Sequence[str]) -> list[str]:
    curves = _curves(summaries)
    return [anchor for anchor in anchors if anchor not in curves]


def _bd_row(codec: str, levels: list[dict], anchor: str, anchor_levels: list[dict], metric: str,
            column: str) -> dict:
    row = {"codec": codec, "anchor": anchor, "metric": metric, "points": len(levels),
           "bd_rate_percent": math.nan, "bd_quality": math.nan, "note": ""}
    try:
        args = ([s["bpp_mean"] for s in anchor_levels], [s[column] for s in anchor_levels],
                [s["bpp_mean"] for s in levels], [s[column] for s in levels])
        row.update(bd_rate_percent=bd_rate(*args), bd_quality=bd_quality(*args))
    except ValueError as exc:
        row["note"] = str(exc)
    if not row["note"] and math.isnan(row["bd_rate_percent"]):
        row["note"] = "outside the anchor's quality range: no overlap to integrate"
    elif len({s["bpp_mean"] for s in levels}) == 1:
        row["note"] = ("one point, no curve: not a Bjøntegaard average but the difference at that point, "
                       "read off the anchor's curve")
    return row


def _curves(summaries: Sequence[dict]) -> dict[str, list[dict]]:
    curves: dict[str, list[dict]] = {}
    for summary in summaries:
        if summary["ok"]:
            curves.setdefault(summary["codec"], []).append(summary)
    return curves


def rows_csv(rows: Sequence[dict], columns: Sequence[str]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def to_json(data) -> bytes:
    """Strict JSON: NaN (not measurable) becomes null, ±infinity (lossless PSNR) the string "inf"."""
    return json.dumps(json_safe(data), indent=2).encode()


def json_safe(data):
    if isinstance(data, float) and not math.isfinite(data):
        return None if math.isnan(data) else ("inf" if data > 0 else "-inf")
    if isinstance(data, dict):
        return {key: json_safe(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(value) for value in data]
    return data


def markdown(summaries: Sequence[dict], bd_rows: Sequence[dict], judge: str, has_pairs: bool,
             notes: Sequence[str]) -> str:
    return (_front(summaries, bd_rows, judge, has_pairs, notes)
            + f"\n## Table 5: speed (ms per image, batched as each codec is used; ×JPEG = vs the mean over "
              f"the JPEG qualities of this run)\n\n{speed_table(summaries)}\n")


def speed_table(summaries: Sequence[dict]) -> str:
    jpeg = [s for s in summaries if s["codec"] == "jpeg" and s["ok"]]
    base = {key: sum(s[key] for s in jpeg) / len(jpeg) if jpeg else math.nan for key in ("encode_ms", "decode_ms")}
    return _table(["Codec", "Level", "Encode (ms)", "Encode ×JPEG", "Decode (ms)", "Decode ×JPEG"],
                  [[s["codec"], s["setting"], _fmt(s["encode_ms"], 2), _ratio(s["encode_ms"], base["encode_ms"]),
                    _fmt(s["decode_ms"], 2), _ratio(s["decode_ms"], base["decode_ms"])]
                   for s in summaries if s["codec"] != REFERENCE])


def _ratio(value: float, base: float) -> str:
    return _fmt(value / base, 1) + "×" if base > 0 and math.isfinite(value) else "–"


def _front(summaries: Sequence[dict], bd_rows: Sequence[dict], judge: str, has_pairs: bool,
           notes: Sequence[str]) -> str:
    stats = ("mean", "max", "min")
    table1 = _table(
        ["Codec", "Level", "Images (failed)", *(f"bpp {s}" for s in stats), *(f"CR raw {s}" for s in stats),
         *(f"CR source {s}" for s in stats), "Size (MB)"],
        [[s["codec"], s["setting"], f"{s['images']} ({s['failed']})", *_stats(s, "bpp", 3),
          *_stats(s, "ratio_raw", 1), *_stats(s, "ratio_source", 1), _fmt(s["size_mb"], 3)] for s in summaries])
    quality = (("psnr", "PSNR (dB)", 2), ("ms_ssim", "MS-SSIM", 4), ("ssim", "SSIM", 4), ("l1", "L1", 4),
               ("l2", "L2", 5))
    table2 = _table(["Codec", "Level", *(f"{title} {s}" for _, title, _ in quality for s in stats)],
                    [[s["codec"], s["setting"], *(v for key, _, d in quality for v in _stats(s, key, d))]
                     for s in summaries])
    face = (("psnr", "PSNR (dB)", 2), ("face_psnr", "Face PSNR (dB)", 2), ("ms_ssim", "MS-SSIM", 4),
            ("face_ms_ssim", "Face MS-SSIM", 4), ("face_ssim", "Face SSIM", 4), ("l1", "L1", 4),
            ("face_l1", "Face L1", 4))
    table2b = _table(["Codec", "Level", "bpp", *(f"{title} mean" for _, title, _ in face)],
                     [[s["codec"], s["setting"], _fmt(s["bpp_mean"], 3),
                       *(_fmt(s[f"{key}_mean"], d) for key, _, d in face)] for s in summaries])
    accuracy = "Verification acc (k-fold pairs)" if has_pairs else "Verification acc (no pairs)"
    table3 = _table(
        ["Codec", "Level", "bpp", "Cosine mean", "Cosine min", accuracy, "1-NN identity acc", "Faces not detected"],
        [[s["codec"], s["setting"], _fmt(s["bpp_mean"], 3), _fmt(s["cosine_mean"], 4), _fmt(s["cosine_min"], 4),
          _accuracy(s), f"{_fmt(s['nn_accuracy'], 4)} ({s['nn_faces']} faces)", _not_detected(s)]
         for s in summaries])
    table4 = _table(["Codec", "vs", "Quality metric", "Points", "BD-rate (%)", "BD-quality", "Note"],
                    [[r["codec"], r["anchor"], r["metric"], str(r["points"]), _fmt(r["bd_rate_percent"], 2),
                      _fmt(r["bd_quality"], 4), r["note"]] for r in bd_rows])
    header = "\n".join(f"- {note}" for note in [f"identity judge: {judge}", *notes])
    return (f"# facezip evaluation\n\n{header}\n\n## Table 1: compression (per image)\n\n{table1}\n"
            f"\n## Table 2: quality (per image; L1/L2 on pixels in [0, 1])\n\n{table2}\n"
            f"\n## Table 2b: face region vs whole image (means; face mask from the landmarks, see the notes "
            f"for centre-ellipse fallbacks; face PSNR and L1 over the mask's pixels, face MS-SSIM and SSIM on "
            f"its bounding box, MS-SSIM not measured where that box is under 33 px)\n\n{table2b}\n"
            f"\n## Table 3: identity (judge: {judge})\n\n{table3}\n"
            f"\n## Table 4: Bjøntegaard deltas (rate = mean bpp; negative BD-rate = fewer bits)\n\n{table4}\n")


def _accuracy(summary: dict) -> str:
    if not summary["verification_pairs"]:
        return "–"
    return (f"{_fmt(summary['verification_accuracy'], 4)} ± {_fmt(summary['verification_std'], 4)} "
            f"({summary['verification_pairs']} pairs, {summary['verification_folds']} folds)")


def _not_detected(summary: dict) -> str:
    missing = summary["faces_not_detected"]
    return "not checked" if missing is None else f"{missing} of {summary['ok']}"


def _stats(summary: dict, metric: str, digits: int) -> list[str]:
    return [_fmt(summary[f"{metric}_{stat}"], digits) for stat in ("mean", "max", "min")]


def _fmt(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
