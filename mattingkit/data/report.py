"""The data report of notebook 01: what a manifest holds (counts, splits, sizes, problems) as numbers for
``metrics.json`` and as ``data_report.md``."""
from __future__ import annotations

from typing import Any, Mapping

import pandas as pd


def size_stats(df: pd.DataFrame) -> dict[str, Any]:
    """Min / median / max of the manifest's image widths and heights (empty for no rows).

    Example:
        >>> size_stats(pd.DataFrame({"width": [10, 30], "height": [5, 5]}))["width_median"]
        20.0
    """
    if len(df) == 0:
        return {}
    w, h = df["width"].astype(int), df["height"].astype(int)
    return {"width_min": int(w.min()), "width_median": float(w.median()), "width_max": int(w.max()),
            "height_min": int(h.min()), "height_median": float(h.median()), "height_max": int(h.max())}


def data_summary(df: pd.DataFrame, report) -> dict[str, Any]:
    """Counts of a validated manifest: items, splits, sources, foreground groups, trimaps, exclusions and
    problems (from the validation ``report``), image sizes."""
    return {
        "items": int(len(df)),
        "splits": {str(k): int(v) for k, v in df["split"].value_counts().sort_index().items()},
        "sources": {str(k): int(v) for k, v in df["source"].value_counts().sort_index().items()},
        "groups": int(df["group"].nunique()), "with_trimap": int((df["trimap"] != "").sum()),
        "excluded": int(report.n_bad), "problems": int(len(report.problems)), "problem_kinds": report.counts,
        "sizes": size_stats(df),
    }


def data_report_md(v: Mapping[str, Any], report) -> str:
    """``data_report.md``: the numbers of :func:`data_summary` and the problems of the validation ``report``
    (a :class:`mattingkit.data.layouts.ValidationReport`), then the sample grid."""
    lines = [f"# Data report — {v['layout']} ({v['data_root']})", "",
             f"- items: **{v['items']}** ({', '.join(f'{k}: {n}' for k, n in v['splits'].items())}), "
             f"{v['groups']} foreground groups, {v['with_trimap']} with a trimap",
             f"- excluded: {v['excluded']} item(s), {v['problems']} problem(s)"
             + (f" ({', '.join(f'{k}: {n}' for k, n in v['problem_kinds'].items())})" if v["problems"] else ""),
             f"- backgrounds: {v['backgrounds'] if v['backgrounds'] is not None else 'none configured'}",
             f"- competition test images: {v['test_images'] if v['test_images'] is not None else 'none configured'}"]
    s = v["sizes"]
    if s:
        lines.append(f"- image sizes: width {s['width_min']}–{s['width_max']} (median {s['width_median']:g}), "
                     f"height {s['height_min']}–{s['height_max']} (median {s['height_median']:g})")
    if report.problems:
        lines += ["", "| id | problem | file |", "|---|---|---|"]
        lines += [f"| {p.id} | {p.problem} | {p.file} |" for p in report.problems[:50]]
        if len(report.problems) > 50:
            lines.append(f"\n... and {len(report.problems) - 50} more (see the .problems.csv beside the manifest)")
    lines += ["", "![samples](data_samples.png)", ""]
    return "\n".join(lines)


__all__ = ["data_report_md", "data_summary", "size_stats"]
