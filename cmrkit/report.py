"""Tables and figures of a reproduction run, with the thesis values side by side.

Layout of a report folder (``reports/<profile>/`` unless the run says otherwise)::

    tables/<id>.csv  tables/<id>.md  tables/<id>.json   one row per (row, metric) cell
    figures/<id>.png figures/<id>.json                   PNG at fixed dpi + provenance sidecar
    notebooks/<NN_name>.ipynb                            executed notebooks (runner)
    run.json                                             per-notebook status and wall time (runner)
    index.md  index.html                                 every registered artefact with its status

Every table cell carries this run's value (mean and sd when it is a summary), the thesis value and
sd transcribed in ``cmrkit/reference/thesis.yaml`` (measured on UK Biobank), the data set of this
run and the units. Thesis values are looked up, never typed into notebooks.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from . import __version__
from .config import Config
from .registry import NOTEBOOKS, REGISTRY, Artefact, by_id, for_notebook
from .utils import REPO_ROOT, atomic_path, atomic_write, git_sha, resolve_path

__all__ = [
    "Report",
    "TableRow",
    "thesis_reference",
    "thesis_value",
    "default_report_dir",
    "write_index",
    "FIGURE_DPI",
    "THESIS_DATASET",
]

FIGURE_DPI = 150
THESIS_DATASET = "UK Biobank (thesis)"
_REFERENCE = Path(__file__).resolve().parent / "reference" / "thesis.yaml"


@lru_cache(maxsize=1)
def thesis_reference() -> dict[str, Any]:
    """The transcribed thesis values (``cmrkit/reference/thesis.yaml``), including ``anomalies``."""
    with open(_REFERENCE) as fh:
        return yaml.safe_load(fh)


def _lookup(path: Sequence[str]) -> Any:
    node: Any = thesis_reference()
    for part in path:
        if isinstance(node, Mapping):
            # YAML turns numeric keys (latent dims, layer counts) into ints
            if part in node:
                node = node[part]
                continue
            try:
                key = int(part)
            except (TypeError, ValueError):
                return None
            if key not in node:
                return None
            node = node[key]
        else:
            return None
    return node


def thesis_value(table_path: str, key: Sequence[str]) -> tuple[float | None, float | None]:
    """Thesis ``(mean, sd)`` for a cell; ``(None, None)`` when the thesis reports none.

    ``table_path`` is the dotted registry path (``"chapter4.table_4_1"``) and ``key`` the path below it
    (``("reconstruction_tagging", "apical", "SSIM")``).
    """
    node = _lookup([*table_path.split("."), *map(str, key)])
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return float(node), None
    if isinstance(node, list) and len(node) == 2 and all(isinstance(v, (int, float)) for v in node):
        return float(node[0]), float(node[1])
    return None, None


@dataclass
class TableRow:
    """One table cell of this run.

    ``row`` is a ``/``-separated label (``"reconstruction_tagging/apical"``); the thesis value is looked
    up at ``thesis_key`` (default: the row's parts followed by the metric).
    """

    row: str
    metric: str
    value: float
    sd: float | None = None
    n: int | None = None
    units: str = ""
    note: str = ""
    thesis_key: tuple[str, ...] | None = None

    def key(self) -> tuple[str, ...]:
        return self.thesis_key if self.thesis_key is not None else (*self.row.split("/"), self.metric)


def default_report_dir(profile: str) -> Path:
    """``reports/<profile>`` at the repository root."""
    return REPO_ROOT / "reports" / profile


def _fmt(v: float | None, sd: float | None = None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    s = f"{v:.{digits}g}" if abs(v) >= 1000 or (0 < abs(v) < 1e-3) else f"{v:.{digits}f}"
    if sd is not None and not (isinstance(sd, float) and math.isnan(sd)):
        s += f" ± {sd:.{digits}f}"
    return s


@dataclass
class Report:
    """Writes the artefacts of one notebook or CLI run.

    Parameters
    ----------
    profile, seed, dataset
        Recorded in every sidecar; ``dataset`` is a human label of this run's data
        (e.g. ``"phantom (smoke, 10 subjects)"``).
    root
        Report folder; default ``reports/<profile>``.
    notebook
        Stem of the notebook writing through this report; artefacts must belong to it.
    parameters
        Resolved run parameters, stored in the sidecars.
    """

    profile: str
    seed: int
    dataset: str
    root: Path | None = None
    notebook: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = resolve_path(self.root) if self.root else default_report_dir(self.profile)
        (self.root / "tables").mkdir(parents=True, exist_ok=True)
        (self.root / "figures").mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_config(
        cls, cfg: Config, notebook: str | None = None, root: str | Path | None = None, dataset_label: str | None = None
    ) -> Report:
        """Build from a :class:`cmrkit.config.Config`."""
        label = dataset_label or cfg.dataset
        return cls(
            profile=cfg.profile,
            seed=cfg.seed,
            dataset=label,
            root=Path(root) if root else None,
            notebook=notebook,
            parameters=cfg.to_dict(),
        )

    # ------------------------------------------------------------------ helpers
    def _artefact(self, artefact_id: str, kind: str) -> Artefact:
        art = by_id(artefact_id)
        if art.kind != kind:
            raise ValueError(f"artefact {artefact_id!r} is registered as a {art.kind}, not a {kind}")
        if self.notebook is not None and art.notebook != self.notebook:
            raise ValueError(f"artefact {artefact_id!r} belongs to notebook {art.notebook!r}, not {self.notebook!r}")
        return art

    def _meta(self, art: Artefact, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        return {
            "id": art.id,
            "title": art.title,
            "notebook": art.notebook,
            "profile": self.profile,
            "seed": self.seed,
            "dataset": self.dataset,
            "thesis_dataset": THESIS_DATASET if art.thesis else None,
            "git_sha": git_sha(),
            "cmrkit_version": __version__,
            "parameters": self.parameters,
            **(dict(extra) if extra else {}),
        }

    # ------------------------------------------------------------------ tables
    def table_frame(self, artefact_id: str, rows: Iterable[TableRow | Mapping[str, Any]]) -> pd.DataFrame:
        """The long-format table (one line per cell) with thesis values filled in."""
        art = self._artefact(artefact_id, "table")
        records = []
        for r in rows:
            r = r if isinstance(r, TableRow) else TableRow(**r)
            if r.value is None:
                raise ValueError(f"table {artefact_id}: row {r.row!r} metric {r.metric!r} has no value")
            t_mean, t_sd = thesis_value(art.thesis, r.key()) if art.thesis else (None, None)
            records.append(
                {
                    "row": r.row,
                    "metric": r.metric,
                    "value": float(r.value),
                    "sd": None if r.sd is None else float(r.sd),
                    "n": r.n,
                    "units": r.units,
                    "dataset": self.dataset,
                    "thesis_value": t_mean,
                    "thesis_sd": t_sd,
                    "thesis_dataset": THESIS_DATASET if t_mean is not None else "",
                    "note": r.note,
                }
            )
        if not records:
            raise ValueError(f"table {artefact_id} has no rows")
        return pd.DataFrame.from_records(records)

    def save_table(
        self,
        artefact_id: str,
        rows: Iterable[TableRow | Mapping[str, Any]],
        *,
        notes: Sequence[str] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Write ``tables/<id>.csv``, ``.md`` and ``.json`` atomically and return the frame."""
        art = self._artefact(artefact_id, "table")
        df = self.table_frame(artefact_id, rows)
        base = self.root / "tables" / artefact_id
        with atomic_write(base.with_suffix(".csv"), "w") as fh:
            df.to_csv(fh, index=False, float_format="%.6g")
        with atomic_write(base.with_suffix(".md"), "w") as fh:
            fh.write(_table_markdown(art, df, self.dataset, notes))
        meta = self._meta(art, extra)
        meta["notes"] = list(notes)
        with atomic_write(base.with_suffix(".json"), "w") as fh:
            json.dump(meta, fh, indent=2, default=str)
        return df

    # ------------------------------------------------------------------ status
    def artefact_status(self, *, require: bool = False) -> pd.DataFrame:
        """Every artefact the registry assigns to this report's notebook and whether it was written.

        Columns ``id, kind, written, title``. With ``require=True`` a missing artefact raises
        ``RuntimeError`` naming it (the last cell of every notebook checks this).
        """
        if self.notebook is None:
            raise ValueError("artefact_status needs a Report bound to a notebook (Report(..., notebook=...))")
        rows = [
            {"id": a.id, "kind": a.kind, "written": _status(self.root, a) == "present", "title": a.title}
            for a in for_notebook(self.notebook)
        ]
        status = pd.DataFrame(rows, columns=["id", "kind", "written", "title"])
        missing = list(status.loc[~status["written"].astype(bool), "id"])
        if require and missing:
            raise RuntimeError(f"{self.notebook}: artefacts not written under {self.root}: {', '.join(missing)}")
        return status

    # ------------------------------------------------------------------ figures
    def save_figure(
        self, fig: Any, artefact_id: str, *, caption: str = "", extra: Mapping[str, Any] | None = None
    ) -> Path:
        """Write ``figures/<id>.png`` (matplotlib figure, fixed dpi, no timestamps) and its JSON sidecar."""
        art = self._artefact(artefact_id, "figure")
        png = self.root / "figures" / f"{artefact_id}.png"
        with atomic_path(png) as tmp:
            fig.savefig(tmp, dpi=FIGURE_DPI, bbox_inches="tight", metadata={"Software": None}, format="png")
        meta = self._meta(art, extra)
        meta["caption"] = caption
        with atomic_write(png.with_suffix(".json"), "w") as fh:
            json.dump(meta, fh, indent=2, default=str)
        return png


def _table_markdown(art: Artefact, df: pd.DataFrame, dataset: str, notes: Sequence[str]) -> str:
    out = io.StringIO()
    out.write(f"### {art.title}\n\n")
    # a table of the thesis always shows the thesis column, even when no row of this run has a
    # thesis counterpart (e.g. the reduced ablation grid of the smoke profile)
    has_thesis = bool(art.thesis) or df["thesis_value"].notna().any()
    head = ["row", "metric", f"this run ({dataset})"]
    if has_thesis:
        head.append(f"thesis ({THESIS_DATASET})")
    head += ["units", "n"]
    out.write("| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n")
    for r in df.itertuples(index=False):
        cells = [str(r.row), str(r.metric), _fmt(r.value, None if pd.isna(r.sd) else r.sd)]
        if has_thesis:
            cells.append(
                _fmt(None if pd.isna(r.thesis_value) else r.thesis_value, None if pd.isna(r.thesis_sd) else r.thesis_sd)
            )
        cells += [str(r.units or ""), "" if pd.isna(r.n) else str(int(r.n))]
        out.write("| " + " | ".join(cells) + " |\n")
    row_notes = sorted({n for n in df["note"] if isinstance(n, str) and n})
    if art.thesis and not df["thesis_value"].notna().any():
        node = _lookup(art.thesis.split("."))
        rows = ", ".join(map(str, node)) if isinstance(node, Mapping) else "none"
        row_notes.append(f"No row of this run has a thesis counterpart; the thesis reports rows {rows}.")
    for n in [*notes, *row_notes]:
        out.write(f"\n- {n}")
    anomalies = [a for a in thesis_reference().get("anomalies", []) if _mentions(a, art)]
    for a in anomalies:
        out.write(f"\n- Thesis anomaly: {a}")
    out.write("\n")
    return out.getvalue()


def _mentions(anomaly: str, art: Artefact) -> bool:
    if not art.thesis:
        return False
    num = art.id.replace("table_", "").replace("_", ".")
    return f"Table {num}" in anomaly or f"Tables {num}" in anomaly or f"and {num}" in anomaly


# ---------------------------------------------------------------------- index
def _status(root: Path, art: Artefact) -> str:
    folder, suffix = ("tables", ".csv") if art.kind == "table" else ("figures", ".png")
    return "present" if (root / folder / f"{art.id}{suffix}").is_file() else "missing"


def coverage(root: str | Path) -> dict[str, tuple[int, int]]:
    """Counts ``{"tables": (present, expected), "figures": ..., "kit": ...}`` over the registry."""
    root = resolve_path(root)
    out = {}
    for name, sel in (
        ("tables", lambda a: a.thesis_item and a.kind == "table"),
        ("figures", lambda a: a.thesis_item and a.kind == "figure"),
        ("kit", lambda a: not a.thesis_item),
    ):
        arts = [a for a in REGISTRY if sel(a)]
        out[name] = (sum(_status(root, a) == "present" for a in arts), len(arts))
    return out


def write_index(root: str | Path, profile: str | None = None) -> Path:
    """Write ``index.md`` and ``index.html`` listing every registered artefact with its status."""
    root = resolve_path(root)
    root.mkdir(parents=True, exist_ok=True)
    run = {}
    if (root / "run.json").is_file():
        run = json.loads((root / "run.json").read_text())
    nb_status = run.get("notebooks", {})
    cov = coverage(root)
    lines = [f"# cmrkit report: profile `{profile or run.get('profile', root.name)}`", ""]
    if run:
        lines += [
            f"seed {run.get('seed')}, dataset {run.get('dataset')}, git {run.get('git_sha')}, "
            f"cmrkit {run.get('cmrkit_version')}",
            "",
        ]
    lines += [
        "Thesis values were measured on UK Biobank; this run's values come from the data set named in each table.",
        "",
        "## Notebooks",
        "",
        "| notebook | purpose | status | wall time (s) |",
        "|---|---|---|---|",
    ]
    for stem, purpose in NOTEBOOKS.items():
        st = nb_status.get(stem, {})
        status = st.get("status", "not run")
        wall = st.get("wall_s")
        link = f"[{stem}](notebooks/{stem}.ipynb)" if (root / "notebooks" / f"{stem}.ipynb").is_file() else stem
        lines.append(f"| {link} | {purpose} | {status} | {'' if wall is None else f'{wall:.1f}'} |")
    for kind, folder, suffix in (("table", "tables", ".md"), ("figure", "figures", ".png")):
        lines += ["", f"## {kind.capitalize()}s", "", "| id | title | notebook | status |", "|---|---|---|---|"]
        for art in (a for a in REGISTRY if a.kind == kind):
            st = _status(root, art)
            link = f"[{art.id}]({folder}/{art.id}{suffix})" if st == "present" else art.id
            lines.append(f"| {link} | {art.title} | {art.notebook} | {st} |")
    known = {a.id for a in REGISTRY}
    stray = (
        sorted(
            p.stem
            for d in ("tables", "figures")
            for p in (root / d).glob("*.*")
            if p.suffix in (".csv", ".png") and p.stem not in known
        )
        if root.exists()
        else []
    )
    if stray:
        lines += ["", "Unregistered files (not part of the registry): " + ", ".join(stray)]
    cov_line = (
        f"Coverage: thesis tables {cov['tables'][0]}/{cov['tables'][1]}, "
        f"thesis figures {cov['figures'][0]}/{cov['figures'][1]}, "
        f"kit artefacts {cov['kit'][0]}/{cov['kit'][1]}"
    )
    lines += ["", cov_line, ""]
    md = "\n".join(lines)
    with atomic_write(root / "index.md", "w") as fh:
        fh.write(md)
    with atomic_write(root / "index.html", "w") as fh:
        fh.write(_html(md))
    return root / "index.md"


def _html(md: str) -> str:
    """A minimal static rendering of the index (tables, headings, links) with no dependencies."""
    import re

    body = []
    in_table = False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(set(c) <= {"-"} for c in cells):
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
                tag = "th"
            else:
                tag = "td"
            conv = [
                re.sub(
                    r"\[([^\]]+)\]\(([^)]+)\)",
                    lambda m: f'<a href="{html.escape(m.group(2))}">{html.escape(m.group(1))}</a>',
                    html.escape(c, quote=False).replace("&amp;", "&"),
                )
                for c in cells
            ]
            body.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in conv) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>cmrkit "
        f"report</title><style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
