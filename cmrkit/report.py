"""Tables and figures of a reproduction run, with the thesis values side by side.

Layout of a report folder (``reports/<profile>/`` unless the run says otherwise)::

    tables/<id>.csv  tables/<id>.md  tables/<id>.json   one row per (row, metric) cell
    figures/<id>.png figures/<id>.json                   PNG at fixed dpi + provenance sidecar
    skipped/<id>.json                                    an artefact left out, and why (Report.skip)
    notebooks/<NN_name>.ipynb                            executed notebooks (runner)
    run.json                                             per-notebook status and wall time (runner)
    index.md  index.html                                 every registered artefact with its status

An artefact that cannot be made from the run's data set (tagging-based tables on a data set without
tagging, a comparison by sex on a cohort without a sex covariate) is *left out* with
:meth:`Report.skip`, which records the reason; the index lists it as "left out: <reason>", apart from
the artefacts that are missing because their notebook did not run or failed. Subjects or panels left
out of an artefact that was made are named in its notes or caption (``left_out=`` of
:meth:`Report.save_table` / :meth:`Report.save_figure`).

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
    "coverage",
    "coverage_line",
    "claim_report_dir",
    "md_cell",
    "DATASET_FILE",
    "SKIPPED_DIR",
    "NOT_APPLICABLE",
    "skip_reason",
    "left_out_note",
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

    @classmethod
    def summary(
        cls, row: str, metric: str, values: Any, *, units: str = "", note: str = "", thesis_key: Any = None
    ) -> TableRow:
        """The mean +- sample sd (ddof 1; none for one value) of the finite ``values``, with their count;
        NaN and n = 0 (noted "no finite value") when none is finite."""
        import numpy as np

        v = np.asarray(values, dtype=float).ravel()
        v = v[np.isfinite(v)]
        if v.size == 0:
            return cls(row, metric, math.nan, n=0, units=units, note=note or "no finite value", thesis_key=thesis_key)
        sd = float(v.std(ddof=1)) if v.size > 1 else None
        return cls(row, metric, float(v.mean()), sd, n=int(v.size), units=units, note=note, thesis_key=thesis_key)


def default_report_dir(profile: str, dataset: str = "phantom") -> Path:
    """``reports/<profile>`` at the repository root for the phantom, ``reports/<profile>/<dataset>``
    for a run on another data set (a report never mixes data sets; see :func:`claim_report_dir`)."""
    base = REPO_ROOT / "reports" / profile
    return base if dataset == "phantom" else base / dataset


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
        Report folder; default :func:`default_report_dir` (``reports/<profile>``, or
        ``reports/<profile>/<dataset>`` off the phantom).
    notebook
        Stem of the notebook writing through this report; artefacts must belong to it.
    parameters
        Resolved run parameters, stored in the sidecars; with ``dataset`` and ``data_dir`` among them
        (a :class:`~cmrkit.config.Config`'s) the folder is claimed for that data set
        (:func:`claim_report_dir`).
    """

    profile: str
    seed: int
    dataset: str
    root: Path | None = None
    notebook: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ds, ddir = self.parameters.get("dataset"), self.parameters.get("data_dir")
        self.root = resolve_path(self.root) if self.root else default_report_dir(self.profile, ds or "phantom")
        if ds and ddir:  # a run's report: refuse a folder that holds another data set's artefacts
            claim_report_dir(self.root, ds, ddir)
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
        if self.notebook is not None and not art.writable_by(self.notebook):
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
        left_out: Mapping[str, str] | None = None,
    ) -> pd.DataFrame:
        """Write ``tables/<id>.csv``, ``.md`` and ``.json`` atomically and return the frame.

        ``left_out`` maps subjects (or parts) of the data set that the table could not use to the
        reason; they are named in a last note, stored in the sidecar and printed (the notebook's
        output says it too).
        """
        art = self._artefact(artefact_id, "table")
        df = self.table_frame(artefact_id, rows)
        left = dict(left_out or {})
        if left:
            notes = [*notes, left_out_note(left)]
        base = self.root / "tables" / artefact_id
        with atomic_write(base.with_suffix(".csv"), "w") as fh:
            df.to_csv(fh, index=False, float_format="%.6g")
        with atomic_write(base.with_suffix(".md"), "w") as fh:
            fh.write(_table_markdown(art, df, self.dataset, notes))
        meta = self._meta(art, extra)
        meta["notes"] = list(notes)
        meta["left_out"] = left
        with atomic_write(base.with_suffix(".json"), "w") as fh:
            json.dump(meta, fh, indent=2, default=str)
        self._written(art, left)
        return df

    # ------------------------------------------------------------------ left out
    def skip(self, artefact_id: str, reason: str) -> Path:
        """Record that this run leaves ``artefact_id`` out, and why (e.g. ``"needs tagging; this data
        set has none"``).

        Writes ``skipped/<id>.json`` (the reason with the run's provenance) and removes the artefact's
        files of an earlier run into this folder, so the index describes this run: the artefact is
        listed as "left out: <reason>", not as missing. Saving the artefact later removes the record.
        The reason is printed, so the notebook's output says it where the artefact would have been.
        """
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError(f"skip({artefact_id!r}): give the reason the artefact is left out")
        art = self._artefact(artefact_id, by_id(artefact_id).kind)
        for f in _artefact_files(self.root, art):
            f.unlink(missing_ok=True)
        meta = self._meta(art, None)
        meta["reason"] = " ".join(reason.split())
        path = self.root / SKIPPED_DIR / f"{art.id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w") as fh:
            json.dump(meta, fh, indent=2, default=str)
        print(f"{art.id} left out: {meta['reason']}")
        return path

    def skipped(self) -> dict[str, str]:
        """``{artefact id: reason}`` of every artefact of this report's notebook (all notebooks when
        it is not bound to one) recorded as left out in the report folder."""
        return {
            a.id: reason
            for a in (for_notebook(self.notebook) if self.notebook else REGISTRY)
            if (reason := skip_reason(self.root, a)) is not None
        }

    def _written(self, art: Artefact, left_out: Mapping[str, str]) -> None:
        """An artefact was saved: drop a stale 'left out' record, say what was left out of it."""
        (self.root / SKIPPED_DIR / f"{art.id}.json").unlink(missing_ok=True)
        if left_out:
            print(f"{art.id}: {left_out_note(left_out)}")

    # ------------------------------------------------------------------ status
    def artefact_status(self, *, require: bool = False) -> pd.DataFrame:
        """Every artefact the registry assigns to this report's notebook and whether it was written.

        Columns ``id, kind, written, status, title``; ``status`` is ``written``, ``left out: <reason>``
        (:meth:`skip`) or ``missing``. With ``require=True`` a missing artefact raises ``RuntimeError``
        naming it (the last cell of every notebook checks this); one left out for a stated reason does not.
        """
        if self.notebook is None:
            raise ValueError("artefact_status needs a Report bound to a notebook (Report(..., notebook=...))")
        rows = []
        for a in for_notebook(self.notebook):
            st = _status(self.root, a)
            text = {"present": "written", "missing": "missing"}.get(st) or f"left out: {skip_reason(self.root, a)}"
            rows.append({"id": a.id, "kind": a.kind, "written": st == "present", "status": text, "title": a.title})
        status = pd.DataFrame(rows, columns=["id", "kind", "written", "status", "title"])
        missing = list(status.loc[status["status"] == "missing", "id"])
        if require and missing:
            raise RuntimeError(f"{self.notebook}: artefacts not written under {self.root}: {', '.join(missing)}")
        return status

    # ------------------------------------------------------------------ figures
    def save_figure(
        self,
        fig: Any,
        artefact_id: str,
        *,
        caption: str = "",
        extra: Mapping[str, Any] | None = None,
        left_out: Mapping[str, str] | None = None,
    ) -> Path:
        """Write ``figures/<id>.png`` (matplotlib figure, fixed dpi, no timestamps) and its JSON sidecar.

        ``left_out`` maps subjects or panels the figure could not show to the reason (stored in the
        sidecar, shown under the figure in the index, and printed).
        """
        art = self._artefact(artefact_id, "figure")
        left = dict(left_out or {})
        png = self.root / "figures" / f"{artefact_id}.png"
        with atomic_path(png) as tmp:
            fig.savefig(tmp, dpi=FIGURE_DPI, bbox_inches="tight", metadata={"Software": None}, format="png")
        meta = self._meta(art, extra)
        meta["caption"] = caption
        meta["left_out"] = left
        with atomic_write(png.with_suffix(".json"), "w") as fh:
            json.dump(meta, fh, indent=2, default=str)
        self._written(art, left)
        return png


def _table_parts(
    art: Artefact, df: pd.DataFrame, dataset: str, notes: Sequence[str]
) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, formatted rows and notes of a table as the Markdown file and the HTML index show it."""
    # a table of the thesis always shows the thesis column, even when no row of this run has a
    # thesis counterpart (e.g. the reduced ablation grid of the smoke profile)
    has_thesis = bool(art.thesis) or df["thesis_value"].notna().any()
    head = ["row", "metric", f"this run ({dataset})"]
    if has_thesis:
        head.append(f"thesis ({THESIS_DATASET})")
    head += ["units", "n"]
    rows = []
    for r in df.itertuples(index=False):
        cells = [str(r.row), str(r.metric), _fmt(r.value, None if pd.isna(r.sd) else r.sd)]
        if has_thesis:
            cells.append(
                _fmt(None if pd.isna(r.thesis_value) else r.thesis_value, None if pd.isna(r.thesis_sd) else r.thesis_sd)
            )
        cells += ["" if pd.isna(r.units) else str(r.units or ""), "" if pd.isna(r.n) else str(int(r.n))]
        rows.append(cells)
    row_notes = sorted({n for n in df["note"] if isinstance(n, str) and n})
    if art.thesis and not df["thesis_value"].notna().any():
        node = _lookup(art.thesis.split("."))
        names = ", ".join(map(str, node)) if isinstance(node, Mapping) else "none"
        row_notes.append(f"No row of this run has a thesis counterpart; the thesis reports rows {names}.")
    all_notes = [*notes, *row_notes]
    all_notes += [f"Thesis anomaly: {a}" for a in thesis_reference().get("anomalies", []) if _mentions(a, art)]
    return head, rows, all_notes


def md_cell(text: Any) -> str:
    """Text safe inside a Markdown table cell: ``|`` escaped (``|real - synthetic|`` must not split
    the row), line breaks folded."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _table_markdown(art: Artefact, df: pd.DataFrame, dataset: str, notes: Sequence[str]) -> str:
    head, rows, all_notes = _table_parts(art, df, dataset, notes)
    out = io.StringIO()
    out.write(f"### {art.title}\n\n")
    out.write("| " + " | ".join(map(md_cell, head)) + " |\n|" + "---|" * len(head) + "\n")
    for cells in rows:
        out.write("| " + " | ".join(map(md_cell, cells)) + " |\n")
    for n in all_notes:
        out.write(f"\n- {n}")
    out.write("\n")
    return out.getvalue()


def _mentions(anomaly: str, art: Artefact) -> bool:
    if not art.thesis:
        return False
    num = art.id.replace("table_", "").replace("_", ".")
    return f"Table {num}" in anomaly or f"Tables {num}" in anomaly or f"and {num}" in anomaly


# ---------------------------------------------------------------------- report folders
#: file in a report folder naming the data set its artefacts came from (runs never mix data sets)
DATASET_FILE = "dataset.json"


def claim_report_dir(root: str | Path, dataset: str, data_dir: str | Path, *, write: bool = True) -> Path:
    """Make ``root`` the report folder of a run on ``dataset`` read from ``data_dir``.

    A report describes one run: a folder that already holds artefacts of another data set (or the same
    data set read from another folder) is refused with a :class:`cmrkit.config.ConfigError` that names
    both and says how to keep them apart, instead of mixing tables of two data sets under one index.
    The claim is recorded in ``dataset.json`` (older folders: ``run.json``); with ``write=False`` the
    folder is only checked (before a run has checked its data).
    """
    from .config import ConfigError

    root = resolve_path(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"report folder {root} is a file; give a folder (REPORT_DIR / --report-dir)")
    want = {"dataset": str(dataset), "data_dir": str(resolve_path(data_dir))}
    have = None
    for name in (DATASET_FILE, "run.json"):
        f = root / name
        if f.is_file():
            try:
                d = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if d.get("dataset") and d.get("data_dir"):
                have = {"dataset": str(d["dataset"]), "data_dir": str(d["data_dir"])}
                break
    if have is not None and have != want:
        raise ConfigError(
            f"report folder {root} holds a run on {have['dataset']} ({have['data_dir']}), not on "
            f"{want['dataset']} ({want['data_dir']}); a report never mixes data sets: give another folder "
            "(REPORT_DIR in a notebook, --report-dir on the command line) or remove that one"
        )
    if not write:
        return root
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"report folder {root} cannot be created ({exc.strerror or exc})") from None
    if have is None or not (root / DATASET_FILE).is_file():
        with atomic_write(root / DATASET_FILE, "w") as fh:
            json.dump(want, fh, indent=1)
    return root


# ---------------------------------------------------------------------- index
#: folder of a report holding one ``<id>.json`` per artefact left out of the run (:meth:`Report.skip`)
SKIPPED_DIR = "skipped"
#: ``run.json`` status of a notebook that found the data set lacks what it needs (its artefacts left out)
NOT_APPLICABLE = "not applicable"


def left_out_note(left_out: Mapping[str, str]) -> str:
    """``"Left out: A (reason a); B (reason b)"``: the subjects or parts an artefact could not use."""
    return "Left out: " + "; ".join(f"{k} ({v})" for k, v in left_out.items())


def _artefact_files(root: Path, art: Artefact) -> list[Path]:
    folder, exts = ("tables", (".csv", ".md", ".json")) if art.kind == "table" else ("figures", (".png", ".json"))
    return [root / folder / f"{art.id}{ext}" for ext in exts]


def skip_reason(root: str | Path, art: Artefact) -> str | None:
    """Why the run in ``root`` left ``art`` out (:meth:`Report.skip`), or None."""
    meta = _read_json(resolve_path(root) / SKIPPED_DIR / f"{art.id}.json")
    return str(meta["reason"]) if meta.get("reason") else None


def _status(root: Path, art: Artefact) -> str:
    """``present``, ``skipped`` (left out for a recorded reason) or ``missing``."""
    folder, suffix = ("tables", ".csv") if art.kind == "table" else ("figures", ".png")
    if (root / folder / f"{art.id}{suffix}").is_file():
        return "present"
    return "skipped" if skip_reason(root, art) is not None else "missing"


def coverage(root: str | Path) -> dict[str, tuple[int, int]]:
    """Counts ``{"tables": (present, expected), "figures": ..., "kit": ..., "left_out": (left out, all)}``
    over the registry, for the one run whose report is ``root``."""
    root = resolve_path(root)
    out = {"left_out": (sum(_status(root, a) == "skipped" for a in REGISTRY), len(REGISTRY))}
    for name, sel in (
        ("tables", lambda a: a.thesis_item and a.kind == "table"),
        ("figures", lambda a: a.thesis_item and a.kind == "figure"),
        ("kit", lambda a: not a.thesis_item),
    ):
        arts = [a for a in REGISTRY if sel(a)]
        out[name] = (sum(_status(root, a) == "present" for a in arts), len(arts))
    return out


def coverage_line(root: str | Path) -> str:
    """``Coverage: thesis tables 2/10, thesis figures 8/16, kit artefacts 11/11`` (with ``, left out for
    this data set N`` when the run left artefacts out for a stated reason)."""
    cov = coverage(root)
    line = (
        f"Coverage: thesis tables {cov['tables'][0]}/{cov['tables'][1]}, "
        f"thesis figures {cov['figures'][0]}/{cov['figures'][1]}, "
        f"kit artefacts {cov['kit'][0]}/{cov['kit'][1]}"
    )
    return line + (f", left out for this data set {cov['left_out'][0]}" if cov["left_out"][0] else "")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _notebook_written(stem: str) -> bool:
    return (REPO_ROOT / "notebooks" / f"{stem}.ipynb").is_file()


def _missing_reason(art: Artefact) -> str:
    return f"missing: {art.notebook} " + (
        "did not write it" if _notebook_written(art.notebook) else "is not written yet"
    )


def _run_line(run: Mapping[str, Any], claimed: Mapping[str, Any]) -> str:
    ds = run.get("dataset") or claimed.get("dataset")
    parts = []
    if ds:
        where = run.get("data_dir") or claimed.get("data_dir")
        parts.append(f"data set {ds}" + (f" ({where})" if where else ""))
    if run:
        parts += [f"seed {run.get('seed')}", f"git {run.get('git_sha')}", f"cmrkit {run.get('cmrkit_version')}"]
    return ", ".join(parts)


def write_index(root: str | Path, profile: str | None = None) -> Path:
    """Write ``index.md`` and ``index.html``: every registered artefact with its status.

    ``index.html`` is the page to read: the coverage line at the top, the executed notebooks (their
    HTML export when the runner made one), every present table rendered with its notes, and figure
    thumbnails linking to the full PNG; missing artefacts are listed with the notebook that should
    write them. ``index.md`` lists the same in Markdown (table cells with ``|`` escaped).
    """
    root = resolve_path(root)
    root.mkdir(parents=True, exist_ok=True)
    run = _read_json(root / "run.json")
    claimed = _read_json(root / DATASET_FILE)
    profile = profile or run.get("profile", root.name)
    md = _index_markdown(root, profile, run, claimed)
    with atomic_write(root / "index.md", "w") as fh:
        fh.write(md)
    with atomic_write(root / "index.html", "w") as fh:
        fh.write(_index_html(root, profile, run, claimed))
    return root / "index.md"


def _notebook_links(root: Path, stem: str) -> tuple[str | None, str | None]:
    nb = root / "notebooks"
    page = f"notebooks/{stem}.html" if (nb / f"{stem}.html").is_file() else None
    raw = f"notebooks/{stem}.ipynb" if (nb / f"{stem}.ipynb").is_file() else None
    return page, raw


def _sub_reports(root: Path) -> list[tuple[str, str]]:
    """Report folders of runs on other data sets inside ``root`` (``reports/<profile>/<dataset>/``):
    ``(folder name, data set)``, so the phantom report links them without counting their artefacts."""
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        claim = _read_json(d / DATASET_FILE)
        if claim.get("dataset"):
            out.append((d.name, f"{claim['dataset']} ({claim.get('data_dir', '')})"))
    return out


def _stray(root: Path) -> list[str]:
    known = {a.id for a in REGISTRY}
    return sorted(
        p.stem
        for d in ("tables", "figures")
        if (root / d).is_dir()
        for p in (root / d).glob("*.*")
        if p.suffix in (".csv", ".png") and p.stem not in known
    )


def _index_markdown(root: Path, profile: str, run: Mapping[str, Any], claimed: Mapping[str, Any]) -> str:
    nb_status = run.get("notebooks", {})
    cov_line = coverage_line(root)
    lines = [f"# cmrkit report: profile {profile}", "", cov_line, ""]
    info = _run_line(run, claimed)
    if info:
        lines += [info, ""]
    others = _sub_reports(root)
    if others:
        lines += [
            "Runs on other data sets, reported apart: " + ", ".join(f"[{d}]({n}/index.md)" for n, d in others),
            "",
        ]
    lines += [
        "Thesis values were measured on UK Biobank; this run's values come from the data set named in each table.",
        "Read this report as a web page: index.html.",
        "",
        "## Notebooks",
        "",
        "| notebook | purpose | status | wall time (s) |",
        "|---|---|---|---|",
    ]
    for stem, purpose in NOTEBOOKS.items():
        st = nb_status.get(stem, {})
        status = st.get("status", "not run" if _notebook_written(stem) else "not written yet")
        wall = st.get("wall_s")
        page, raw = _notebook_links(root, stem)
        link = f"[{stem}]({page or raw})" if (page or raw) else stem
        if page and raw:
            link += f" ([ipynb]({raw}))"
        if status == NOT_APPLICABLE and st.get("reason"):
            status = f"{status}: {st['reason']}"
        lines.append(f"| {link} | {md_cell(purpose)} | {md_cell(status)} | {'' if wall is None else f'{wall:.1f}'} |")
    for kind, folder, suffix in (("table", "tables", ".md"), ("figure", "figures", ".png")):
        lines += ["", f"## {kind.capitalize()}s", "", "| id | title | notebook | status |", "|---|---|---|---|"]
        for art in (a for a in REGISTRY if a.kind == kind):
            st = _status(root, art)
            link = f"[{art.id}]({folder}/{art.id}{suffix})" if st == "present" else art.id
            text = f"left out: {skip_reason(root, art)}" if st == "skipped" else st
            left = _read_json(root / folder / f"{art.id}.json").get("left_out") if st == "present" else None
            if left:  # subjects or panels the artefact could not use
                text += f"; {left_out_note(left)[0].lower()}{left_out_note(left)[1:]}"
            lines.append(f"| {link} | {md_cell(art.title)} | {art.notebook} | {md_cell(text)} |")
    stray = _stray(root)
    if stray:
        lines += ["", "Unregistered files (not part of the registry): " + ", ".join(stray)]
    lines += ["", cov_line, ""]
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2430;background:#f6f7f9;
line-height:1.45}
header{background:#1f3a5f;color:#fff;padding:1.2em 2em}
header h1{margin:0 0 .3em;font-size:1.5em}
header p{margin:.2em 0;opacity:.92}
.coverage{font-size:1.08em;font-weight:600;background:#fff;color:#1f3a5f;display:inline-block;padding:.3em .8em;
border-radius:4px;margin-top:.5em}
nav{padding:.6em 2em;background:#e8ecf2;font-size:.95em}nav a{margin-right:1.2em}
main{padding:1em 2em 3em;max-width:1400px}
h2{border-bottom:2px solid #1f3a5f;padding-bottom:.2em;margin-top:1.6em}
h3{margin:1.4em 0 .4em;font-size:1.08em}
table{border-collapse:collapse;background:#fff;font-size:.9em;margin:.4em 0}
td,th{border:1px solid #cfd6df;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.status-ok,.present{color:#1a7f37;font-weight:600}.status-failed{color:#b42318;font-weight:600}
.muted,.missing{color:#8a94a3}
.left-out{color:#8a5a00;font-size:.85em}td.left-out{font-size:1em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:14px}
.card{background:#fff;border:1px solid #d8dee6;border-radius:6px;padding:8px}
.card img{width:100%;height:190px;object-fit:contain;background:#fafbfc;display:block}
.card .cap{font-size:.85em;margin-top:.4em}.card .id{font-family:monospace;font-size:.85em;color:#55606e}
.src{font-size:.85em;color:#55606e;margin:.1em 0 .3em}
ul.notes{font-size:.85em;color:#333;margin:.3em 0 0 1.2em;padding:0}
details{margin:.3em 0}summary{cursor:pointer}summary h3{display:inline}
code{background:#eef1f5;padding:0 3px;border-radius:3px}
"""


#: tables longer than this start folded in index.html
_OPEN_ROWS = 30


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _table_html(root: Path, art: Artefact) -> str:
    """One present table rendered from its CSV and JSON sidecar, with its notes."""
    csv = root / "tables" / f"{art.id}.csv"
    meta = _read_json(csv.with_suffix(".json"))
    try:
        df = pd.read_csv(csv)
        dataset = str(df["dataset"].iloc[0]) if "dataset" in df and len(df) else str(meta.get("dataset", ""))
        head, rows, notes = _table_parts(art, df, dataset, meta.get("notes", []))
    except (OSError, ValueError, KeyError, IndexError) as exc:
        return f"<p class='missing'>{_e(art.id)}: the CSV cannot be read ({_e(exc)})</p>"
    numeric = {i for i, h in enumerate(head) if h.startswith(("this run", "thesis")) or h == "n"}
    # long tables start folded so the page stays scannable; the summary says how long they are
    fold = "" if len(rows) <= _OPEN_ROWS else f" <span class='muted'>({len(rows)} rows: click to show)</span>"
    out = [
        f"<section id='{_e(art.id)}'><details{'' if fold else ' open'}>"
        f"<summary><h3>{_e(art.title)}{fold}</h3></summary>"
    ]
    links = " · ".join(f"<a href='tables/{_e(art.id)}.{ext}'>{ext}</a>" for ext in ("csv", "md", "json"))
    out.append(f"<p class='src'>{_e(art.notebook)} · {links}</p><table><tr>")
    out.append("".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>")
    for cells in rows:
        tds = "".join(
            f"<td class='num'>{_e(c)}</td>" if i in numeric else f"<td>{_e(c)}</td>" for i, c in enumerate(cells)
        )
        out.append(f"<tr>{tds}</tr>")
    out.append("</table>")
    if notes:
        out.append("<ul class='notes'>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    out.append("</details></section>")
    return "\n".join(out)


def _figure_card(root: Path, art: Artefact) -> str:
    png = f"figures/{art.id}.png"
    meta = _read_json(root / "figures" / f"{art.id}.json")
    cap = str(meta.get("caption") or "")
    if len(cap) > 160:  # a long caption folds behind its first sentence
        first, _, rest = cap.partition(". ")
        cap_html = f"<details><summary>{_e(first)}.</summary>{_e(rest)}</details>" if rest else _e(cap)
    else:
        cap_html = _e(cap)
    left = meta.get("left_out") or {}
    left_html = f"<div class='left-out'>{_e(left_out_note(left))}</div>" if left else ""
    return (
        f"<div class='card' id='{_e(art.id)}'><a href='{_e(png)}'><img src='{_e(png)}' loading='lazy' "
        f"alt='{_e(art.title)}'></a><div class='cap'><b>{_e(art.title)}</b>"
        + (f"<br>{cap_html}" if cap else "")
        + f"</div>{left_html}<div class='id'>{_e(art.id)} · {_e(art.notebook)}</div></div>"
    )


def _index_html(root: Path, profile: str, run: Mapping[str, Any], claimed: Mapping[str, Any]) -> str:
    nb_status = run.get("notebooks", {})
    body = [
        "<header>",
        f"<h1>cmrkit report — profile {_e(profile)}</h1>",
        f"<p>{_e(_run_line(run, claimed))}</p>" if _run_line(run, claimed) else "",
        "<p>Thesis values were measured on UK Biobank; this run's values come from the data set named in each "
        "table.</p>",
        f"<div class='coverage'>{_e(coverage_line(root))}</div>",
        (
            "<p>Runs on other data sets, reported apart: "
            + ", ".join(f"<a href='{_e(n)}/index.html'>{_e(d)}</a>" for n, d in _sub_reports(root))
            + "</p>"
        )
        if _sub_reports(root)
        else "",
        "</header>",
        "<nav><a href='#notebooks'>Notebooks</a><a href='#figures'>Figures</a><a href='#tables'>Tables</a>"
        "<a href='#left-out'>Left out</a><a href='#missing'>Missing</a><a href='index.md'>index.md</a></nav><main>",
        "<h2 id='notebooks'>Notebooks</h2><table><tr><th>notebook</th><th>purpose</th><th>status</th>"
        "<th>wall time (s)</th></tr>",
    ]
    for stem, purpose in NOTEBOOKS.items():
        st = nb_status.get(stem, {})
        status = st.get("status", "not run" if _notebook_written(stem) else "not written yet")
        wall = st.get("wall_s")
        page, raw = _notebook_links(root, stem)
        name = (
            f"<a href='{_e(page or raw)}'>{_e(stem)}</a>" if (page or raw) else f"<span class='muted'>{_e(stem)}</span>"
        )
        if page and raw:
            name += f" <span class='muted'>(<a href='{_e(raw)}'>ipynb</a>)</span>"
        err = f"<br><span class='status-failed'>{_e(st['error'])}</span>" if st.get("error") else ""
        cls = {"ok": "status-ok", "failed": "status-failed"}.get(status, "muted")
        if status == NOT_APPLICABLE and st.get("reason"):
            err = f"<br><span class='muted'>{_e(st['reason'])}</span>"
        body.append(
            f"<tr><td>{name}</td><td>{_e(purpose)}</td><td class='{cls}'>{_e(status)}{err}</td>"
            f"<td class='num'>{'' if wall is None else f'{wall:.1f}'}</td></tr>"
        )
    body.append("</table>")
    figs = [a for a in REGISTRY if a.kind == "figure"]
    tabs = [a for a in REGISTRY if a.kind == "table"]
    present_f = [a for a in figs if _status(root, a) == "present"]
    present_t = [a for a in tabs if _status(root, a) == "present"]
    body.append(f"<h2 id='figures'>Figures ({len(present_f)} of {len(figs)})</h2><div class='grid'>")
    body += [_figure_card(root, a) for a in present_f]
    body.append("</div>")
    body.append(f"<h2 id='tables'>Tables ({len(present_t)} of {len(tabs)})</h2>")
    body += [_table_html(root, a) for a in present_t]
    skipped = [a for a in REGISTRY if _status(root, a) == "skipped"]
    if skipped:
        body.append(
            f"<h2 id='left-out'>Left out for this data set ({len(skipped)})</h2><p>These need something the run's "
            "data set does not have; the notebook ran and says so where each would have been.</p>"
        )
        body.append("<table><tr><th>id</th><th>title</th><th>notebook</th><th>why</th></tr>")
        body += [
            f"<tr><td>{_e(a.id)}</td><td>{_e(a.title)}</td><td>{_e(a.notebook)}</td>"
            f"<td class='left-out'>{_e(skip_reason(root, a))}</td></tr>"
            for a in skipped
        ]
        body.append("</table>")
    missing = [a for a in REGISTRY if _status(root, a) == "missing"]
    body.append(f"<h2 id='missing'>Missing artefacts ({len(missing)})</h2>")
    if missing:
        body.append("<table><tr><th>id</th><th>title</th><th>status</th></tr>")
        body += [
            f"<tr><td>{_e(a.id)}</td><td>{_e(a.title)}</td><td class='missing'>{_e(_missing_reason(a))}</td></tr>"
            for a in missing
        ]
        body.append("</table>")
    else:
        body.append("<p>None: every registered table and figure is present.</p>")
    stray = _stray(root)
    if stray:
        body.append(f"<p class='muted'>Unregistered files (not part of the registry): {_e(', '.join(stray))}</p>")
    body.append("</main>")
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>cmrkit report — {_e(profile)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(b for b in body if b)
        + "\n</body></html>\n"
    )
