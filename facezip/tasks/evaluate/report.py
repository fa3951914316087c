"""The evaluation's files: every row as CSV and JSON, Bjøntegaard deltas, and the Markdown
tables in the seed paper's layout (per-image mean / max / min)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence

from facezip.models.metrics import Metric, get_metric, metrics
from facezip.models.recognizer import Recognizer, headline_judge, identity_key
from facezip.tasks.evaluate.bdrate import bd_quality, bd_rate
from facezip.tasks.evaluate.codecs import REFERENCE
from facezip.tasks.evaluate.metrics import RATE_COLUMNS

ROW_HEAD = ("label", "codec", "setting", "key", "identity", "source", "status", "error", "height", "width")
JUDGE_BD_METRICS = ("identity", "verification")  # each expands to one column per judge


def bd_metric_names() -> list[str]:
    """What ``evaluate.bd_metrics`` may name: the registered metrics that take BD deltas, and the judges' two."""
    return [*(m.name for m in metrics() if m.bd), *JUDGE_BD_METRICS]


def row_columns(judges: Sequence[Recognizer]) -> list[str]:
    return [*ROW_HEAD, *RATE_COLUMNS, *(m.name for m in metrics()),
            *(identity_key(j.name, j.measure) for j in judges), "face_found"]


def accuracy_column(judge: Recognizer, has_pairs: bool) -> str:
    """Verification accuracy over pairs, or 1-NN identity accuracy where the data has no pairs."""
    return identity_key(judge.name, "verification_accuracy" if has_pairs else "nn_accuracy")


def bd_columns(names: Sequence[str], judges: Sequence[Recognizer], has_pairs: bool) -> list[tuple[str, int]]:
    """(summary column, sign) per BD curve: a distance (lower = better) is negated, as BD needs a
    quality that grows with rate."""
    known = bd_metric_names()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"evaluate.bd_metrics: unknown metric(s) {unknown} (use {', '.join(known)})")
    columns = []
    for name in names:
        if name not in JUDGE_BD_METRICS:
            columns.append((f"{name}_mean", _sign(get_metric(name).higher_is_better)))
        elif name == "identity":
            columns += [(identity_key(j.name, f"mean_{j.measure}"), _sign(j.higher_is_better)) for j in judges]
        else:  # verification
            columns += [(accuracy_column(j, has_pairs), 1) for j in judges]
    return columns


def _sign(higher_is_better: bool) -> int:
    return 1 if higher_is_better else -1


def bjontegaard(summaries: Sequence[dict], anchors: Sequence[str], names: Sequence[str],
                judges: Sequence[Recognizer], has_pairs: bool) -> list[dict]:
    """BD-rate and BD-quality of every codec curve against each anchor, one row per (codec, anchor,
    metric column). An anchor that was not measured in the run gives no rows (``missing_anchors``)."""
    columns = bd_columns(names, judges, has_pairs)
    curves = _curves(summaries)
    return [_bd_row(codec, levels, anchor, curves[anchor], column, sign)
            for anchor in anchors if anchor in curves
            for codec, levels in curves.items() if codec not in (anchor, REFERENCE)
            for column, sign in columns]


def missing_anchors(summaries: Sequence[dict], anchors: Sequence[str]) -> list[str]:
    curves = _curves(summaries)
    return [anchor for anchor in anchors if anchor not in curves]


def _bd_row(codec: str, levels: list[dict], anchor: str, anchor_levels: list[dict], column: str,
            sign: int) -> dict:
    """``sign`` −1: the column is a distance, integrated negated; BD-quality is given back in the
    column's own units (a negative distance difference = closer to the original)."""
    metric = column.removesuffix("_mean")
    row = {"codec": codec, "anchor": anchor, "metric": metric, "points": len(levels),
           "bd_rate_percent": math.nan, "bd_quality": math.nan, "note": ""}
    try:
        args = ([s["bpp_mean"] for s in anchor_levels], [sign * s[column] for s in anchor_levels],
                [s["bpp_mean"] for s in levels], [sign * s[column] for s in levels])
        row.update(bd_rate_percent=bd_rate(*args), bd_quality=sign * bd_quality(*args))
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


def markdown(summaries: Sequence[dict], bd_rows: Sequence[dict], judges: Sequence[Recognizer], has_pairs: bool,
             notes: Sequence[str]) -> str:
    return (_front(summaries, bd_rows, judges, has_pairs, notes)
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


def _front(summaries: Sequence[dict], bd_rows: Sequence[dict], judges: Sequence[Recognizer], has_pairs: bool,
           notes: Sequence[str]) -> str:
    stats = ("mean", "max", "min")
    table1 = _table(
        ["Codec", "Level", "Images (failed)", *(f"bpp {s}" for s in stats), *(f"CR raw {s}" for s in stats),
         *(f"CR source {s}" for s in stats), "Size (MB)"],
        [[s["codec"], s["setting"], f"{s['images']} ({s['failed']})", *_stats(s, "bpp", 3),
          *_stats(s, "ratio_raw", 1), *_stats(s, "ratio_source", 1), _fmt(s["size_mb"], 3)] for s in summaries])
    whole = [m for m in metrics() if not m.face]
    table2 = _table(["Codec", "Level", *(f"{m.title} {stat}" for m in whole for stat in stats)],
                    [[s["codec"], s["setting"], *(v for m in whole for v in _stats(s, m.name, m.digits))]
                     for s in summaries])
    beside = _face_beside_whole()
    table2b = _table(["Codec", "Level", "bpp", *(f"{m.title} mean" for m in beside)],
                     [[s["codec"], s["setting"], _fmt(s["bpp_mean"], 3),
                       *(_fmt(s[f"{m.name}_mean"], m.digits) for m in beside)] for s in summaries])
    identity = "".join(f"\n## Table 3{'abcdefgh'[i]}: identity judged by {judge.name}{_judge_role(judge)}\n\n"
                       f"{_identity_table(summaries, judge, has_pairs)}\n" for i, judge in enumerate(judges))
    table4 = _table(["Codec", "vs", "Quality metric", "Points", "BD-rate (%)", "BD-quality", "Note"],
                    [[r["codec"], r["anchor"], r["metric"], str(r["points"]), _fmt(r["bd_rate_percent"], 2),
                      _fmt(r["bd_quality"], 4), r["note"]] for r in bd_rows])
    header = "\n".join(f"- {note}" for note in [*_judge_notes(judges), *notes])
    return (f"# facezip evaluation\n\n{header}\n\n## Table 1: compression (per image)\n\n{table1}\n"
            f"\n## Table 2: quality (per image; L1/L2 on pixels in [0, 1])\n\n{table2}\n"
            f"\n## Table 2b: face region vs whole image (means; face mask from the landmarks, see the notes "
            f"for centre-ellipse fallbacks; face PSNR and L1 over the mask's pixels, face MS-SSIM and SSIM on "
            f"its bounding box, MS-SSIM not measured where that box is under 33 px)\n\n{table2b}\n{identity}"
            f"\n## Table 4: Bjøntegaard deltas (rate = mean bpp; negative BD-rate = fewer bits; identity metrics "
            f"name their judge)\n\n{table4}\n")


def _face_beside_whole() -> list[Metric]:
    """Each face-region metric after its whole-image counterpart when there is one (``psnr``, ``face_psnr``)."""
    registered = {m.name: m for m in metrics()}
    shown: list[Metric] = []
    for metric in registered.values():
        if metric.face:
            whole = registered.get(metric.name.removeprefix("face_"))
            shown += [whole, metric] if whole else [metric]
    return shown


def _judge_role(judge: Recognizer) -> str:
    return " (the network facezip's identity loss trains against)" if judge.trained_against else " (independent)"


def _judge_notes(judges: Sequence[Recognizer]) -> list[str]:
    lines = [f"identity judge {j.name}: {j.description}; {_direction(j)}" for j in judges]
    headline = headline_judge(judges)
    lines.append(f"headline identity numbers: {headline.name}" + (
        "" if headline.trained_against else " — no facezip codec trains against it; a codec can learn to please "
                                            "the network its loss uses, so that network's numbers flatter it"))
    unaligned = [f"{j.name} had no usable landmarks in {j.unaligned} crops it embedded (the whole crop was used)"
                 for j in judges if getattr(j, "unaligned", 0)]
    return lines + unaligned


def _direction(judge: Recognizer) -> str:
    threshold = (f", same person {'≥' if judge.higher_is_better else '<'} {judge.same_person_threshold}"
                 if judge.same_person_threshold is not None else "")
    return f"{judge.measure} to the original, {'higher' if judge.higher_is_better else 'lower'} is better{threshold}"


def _identity_table(summaries: Sequence[dict], judge: Recognizer, has_pairs: bool) -> str:
    measure, name = judge.measure, judge.name
    accuracy = "Verification acc (k-fold pairs)" if has_pairs else "Verification acc (no pairs)"
    return _table(
        ["Codec", "Level", "bpp", f"{name} {measure} mean", f"{name} {measure} worst 5 %", f"{name} {accuracy}",
         f"{name} 1-NN identity acc", "Faces not detected (MTCNN)"],
        [[s["codec"], s["setting"], _fmt(s["bpp_mean"], 3), _fmt(s[identity_key(name, f"mean_{measure}")], 4),
          _fmt(s[identity_key(name, f"worst5_{measure}")], 4), _accuracy(s, name),
          f"{_fmt(s[identity_key(name, 'nn_accuracy')], 4)} ({s['nn_faces']} faces)", _not_detected(s)]
         for s in summaries])


def _accuracy(summary: dict, judge: str) -> str:
    if not summary["verification_pairs"]:
        return "–"
    return (f"{_fmt(summary[identity_key(judge, 'verification_accuracy')], 4)} "
            f"± {_fmt(summary[identity_key(judge, 'verification_std')], 4)} "
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
