"""Write tables (Markdown + CSV + LaTeX) and figures (PNG + PDF) atomically; :class:`Entry` describes one of them.

Every table and figure of the reports goes through :func:`write_table` / :func:`save_figure`, so each
artifact exists in all formats and no reader ever sees a half-written file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # headless: reports are rendered on machines without a display

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from vppkit.utils.io import atomic_path, atomic_write_text  # noqa: E402

if TYPE_CHECKING:
    from experiments.common import Context

TABLE_FORMATS = ("md", "csv", "tex")
FIGURE_FORMATS = ("png", "pdf")


@dataclass
class Entry:
    """One rendered table or figure.

    Attributes:
        kind: "table" or "figure".
        title: heading in the index (paper artifact name, e.g. "IoI by object size (Table 8)").
        files: format -> path (md/csv/tex or png/pdf), relative to the profile's report folder.
        caption: what is shown, with units; says which numbers are the paper's and which are ours.
        inline: Markdown shown in the index (e.g. the table itself, or the figure image link).
    """

    kind: str
    title: str
    files: dict[str, str]
    caption: str = ""
    inline: str = ""
    extra: dict = field(default_factory=dict)


def relative(ctx: "Context", paths: dict) -> dict[str, str]:
    """Paths relative to the profile's report folder (for links in index.md)."""
    return {fmt: str(Path(p).resolve().relative_to(ctx.reports_dir.resolve())) for fmt, p in paths.items()}


def write_table(df: pd.DataFrame, stem: str | Path, floatfmt: str = ".2f") -> dict[str, Path]:
    """Write ``df`` as ``<stem>.md``, ``<stem>.csv`` and ``<stem>.tex``; returns the paths by format.

    Column names should carry their unit (e.g. ``"AP (%)"``, ``"GMACs"``).
    """
    stem = Path(stem)
    paths = {fmt: stem.with_suffix(f".{fmt}") for fmt in TABLE_FORMATS}
    atomic_write_text(paths["md"], df.to_markdown(index=False, floatfmt=floatfmt, missingval="–") + "\n")
    atomic_write_text(paths["csv"], df.to_csv(index=False))
    latex = df.to_latex(index=False, float_format=lambda v: format(v, floatfmt), na_rep="--", escape=True)
    atomic_write_text(paths["tex"], latex)
    return paths


def save_figure(fig: plt.Figure, stem: str | Path, dpi: int = 150) -> dict[str, Path]:
    """Save ``fig`` as ``<stem>.png`` and ``<stem>.pdf`` and close it; returns the paths by format."""
    stem = Path(stem)
    paths = {fmt: stem.with_suffix(f".{fmt}") for fmt in FIGURE_FORMATS}
    try:
        for fmt, path in paths.items():
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return paths
