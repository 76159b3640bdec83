"""Condition sliders for chapter 6: choose age, sex, height, weight, smoking, alcohol, SBP and DBP (plus
seed and guidance) and see the heart the conditional model draws for them.

Design (as :mod:`cmrkit.widgets`): the work is a **pure function**, :func:`render`, that generates one
sequence for one condition set and returns everything a view needs (:class:`Rendered`: the sequence,
its phenotypes, the phantom model's expectation for the same covariates, a matplotlib figure and a
text readout). Headless runs call it with the defaults and save the figure; tests call it directly.
:class:`ConditionSliders` is the ipywidgets shell: eight covariate controls, seed and guidance, and a
Generate button. Sliders report only on release (``continuous_update=False``) and each change triggers
one :func:`render`, so no work happens per drag event. The widget shows the ED/ES montage with masks,
the volume curves, the phenotype readout (as text with ``data-*`` attributes, so a browser test can
read it) and a 3-D view of the generated heart at ED and ES (:func:`heart_figure`, plotly ``Mesh3d``
from marching cubes of the masks).

Everything is deterministic: the same covariates, seed and guidance give the same sequence (DDIM
with ``eta = 0`` from seeded noise), the same numbers and the same :attr:`Rendered.key`.
"""

from __future__ import annotations

import hashlib
import html
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Generator", "Rendered", "render", "readout_text", "heart_figure", "ConditionSliders", "READOUT_KEYS"]

#: phenotypes of the readout: (key, units)
READOUT_KEYS = (("LVEDV", "mL"), ("LVESV", "mL"), ("LVEF", "%"), ("LVM", "g"))


@dataclass
class Generator:
    """What :func:`render` needs: the two trained stages, the voxel size and the sampler settings.

    Attributes
    ----------
    autoencoder : :class:`cmrkit.models.cond_diffusion.SequenceAutoencoder`
    diffusion : :class:`cmrkit.models.cond_diffusion.ConditionalLatentDiffusion`
    spacing : voxel size (mm) of the generated grid
    ddim_steps : DDIM steps per sequence
    device : where to sample
    true_model : True when the covariates follow the phantom's model (its expectation is shown)
    """

    autoencoder: Any
    diffusion: Any
    spacing: tuple[float, float, float]
    ddim_steps: int = 50
    device: str = "cpu"
    true_model: bool = False

    @property
    def space(self) -> Any:
        return self.diffusion.space


@dataclass
class Rendered:
    """One generated sequence with its phenotypes and views (output of :func:`render`).

    ``images`` ``(X, Y, Z, T)`` in [0, 1]; ``labels`` ``(X, Y, Z, T)`` uint8; ``phenotypes`` the kit's
    keys (``LVEDV``, ``LVESV``, ``LVEF``, ``LVM``, ``RVEDV``, ``RVESV``, ``RVEF``, ``ES_frame``);
    ``expected`` the phantom model's median heart for the covariates (None without a true model);
    ``curves`` ``{"LV", "RV"}`` volumes per frame (mL); ``seconds`` the generation time.
    """

    conditions: dict[str, float]
    seed: int
    guidance: float
    images: np.ndarray
    labels: np.ndarray
    phenotypes: dict[str, float]
    expected: dict[str, float] | None
    curves: dict[str, np.ndarray]
    seconds: float
    figure: Any = field(default=None, repr=False)

    @property
    def es_frame(self) -> int:
        return int(self.phenotypes["ES_frame"])

    @property
    def key(self) -> str:
        """Digest of the generated masks (equal keys = the same heart)."""
        return hashlib.sha1(np.ascontiguousarray(self.labels).tobytes()).hexdigest()[:12]

    @property
    def readout(self) -> str:
        return readout_text(self.phenotypes, self.expected)

    def readout_html(self) -> str:
        """The readout as HTML; every value is also a ``data-*`` attribute of the ``cmrkit-readout`` div."""
        attrs = " ".join(f'data-{k.lower()}="{self.phenotypes[k]:.1f}"' for k, _ in READOUT_KEYS)
        attrs += f' data-key="{self.key}" data-seed="{self.seed}" data-guidance="{self.guidance:g}"'
        rows = []
        for k, units in READOUT_KEYS:
            exp = "" if self.expected is None else f"{self.expected[k]:.1f}"
            gen = f"{self.phenotypes[k]:.1f}"
            rows.append(f"<tr><td>{k}</td><td class='gen'>{gen}</td><td class='exp'>{exp}</td><td>{units}</td></tr>")
        head = (
            "<tr><th></th><th>generated</th><th>phantom model</th><th></th></tr>"
            if self.expected is not None
            else "<tr><th></th><th>generated</th><th></th><th></th></tr>"
        )
        return (
            f"<div class='cmrkit-readout' {attrs}><table>{head}{''.join(rows)}</table>"
            f"<pre class='cmrkit-readout-text'>{html.escape(self.readout)}</pre></div>"
        )


def readout_text(phenotypes: Mapping[str, float], expected: Mapping[str, float] | None = None) -> str:
    """``"LVEDV 123.4 mL (model 125.0) | ..."``: the readout line of a generated heart."""
    parts = []
    for k, units in READOUT_KEYS:
        s = f"{k} {phenotypes[k]:.1f} {units}"
        if expected is not None:
            s += f" (model {expected[k]:.1f})"
        parts.append(s)
    return " | ".join(parts)


def render(
    generator: Generator, conditions: Mapping[str, Any], *, seed: int = 0, guidance: float = 1.0, figure: bool = True
) -> Rendered:
    """Generate one sequence for ``conditions`` and build its views.

    Parameters
    ----------
    generator
        The trained model (:class:`Generator`).
    conditions
        One value per covariate of the model (names as in :data:`cmrkit.models.conditioning.COVARIATE_NAMES`;
        sex/smoking/alcohol as codes or level names). Out-of-range or malformed values raise
        :class:`cmrkit.models.conditioning.ConditionError` before any work.
    seed
        Seed of the initial noise (:func:`cmrkit.models.diffusion.initial_noise`).
    guidance
        Classifier-free guidance weight (1 = the conditional model alone).
    figure
        Build the matplotlib figure (ED/ES montage with masks, volume curves, readout).
    """
    from .clinical import sequence_phenotypes, sequence_volume_curves
    from .models.cond_diffusion import generate_sequences

    cond = generator.space.validate(conditions)
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    t0 = time.perf_counter()
    g = generate_sequences(
        generator.autoencoder,
        generator.diffusion,
        [cond],
        [int(seed)],
        guidance=float(guidance),
        ddim_steps=int(generator.ddim_steps),
        batch_size=1,
        device=generator.device,
    )
    seconds = time.perf_counter() - t0
    spacing = np.asarray(generator.spacing, dtype=float)
    ph = sequence_phenotypes(g.labels, spacing).iloc[0].to_dict()
    curves = {k: v[0] for k, v in sequence_volume_curves(g.labels, spacing).items() if k in ("LV", "RV")}
    expected = None
    if generator.true_model:
        from .effects import expected_phenotypes

        expected = expected_phenotypes({**_full(cond)})
    out = Rendered(
        cond,
        int(seed),
        float(guidance),
        g.images[0],
        g.labels[0],
        {k: float(v) for k, v in ph.items()},
        expected,
        curves,
        seconds,
    )
    if figure:
        out.figure = _figure(out, spacing)
    return out


def _full(cond: Mapping[str, float]) -> dict[str, float]:
    """The phantom model needs every covariate; ones the model is not conditioned on take typical values."""
    typical = {
        "age": 60.0,
        "sex": 0.0,
        "height_cm": 170.0,
        "weight_kg": 75.0,
        "smoking": 0.0,
        "alcohol": 2.0,
        "sbp": 130.0,
        "dbp": 80.0,
    }
    return {**typical, **dict(cond)}


#: outline colours of LV blood pool, myocardium and RV blood pool (RGB)
_OUTLINE = {1: (0.84, 0.15, 0.16), 2: (0.17, 0.63, 0.17), 3: (0.12, 0.47, 0.71)}


def _overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """RGB image ``(H, W, 3)`` with the one-pixel outline of each structure drawn in its colour (no
    contouring: a slider move must redraw fast)."""
    rgb = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2)
    for k, colour in _OUTLINE.items():
        m = labels == k
        if not m.any():
            continue
        inner = m.copy()
        inner[1:, :] &= m[:-1, :]
        inner[:-1, :] &= m[1:, :]
        inner[:, 1:] &= m[:, :-1]
        inner[:, :-1] &= m[:, 1:]
        rgb[m & ~inner] = colour
    return rgb


def _figure(r: Rendered, spacing: np.ndarray) -> Any:
    """ED and ES at three slices with mask outlines, the LV/RV volume curves and the readout."""
    import matplotlib.pyplot as plt

    x, y, z, t = r.images.shape
    zs = [max(0, z // 5), z // 2, min(z - 1, (4 * z) // 5)]
    fig = plt.figure(figsize=(10.5, 4.2))
    w, h, gap = 0.135, 0.38, 0.01
    for row, (frame, name) in enumerate(((0, "ED"), (r.es_frame, "ES"))):
        for col, zz in enumerate(zs):
            ax = fig.add_axes((0.01 + col * (w + gap), 0.5 - row * (h + 0.06), w, h))
            ax.imshow(_overlay(r.images[:, :, zz, frame].T, r.labels[:, :, zz, frame].T), interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(f"{name} (frame {frame}), slice {zz}", fontsize=7)
    ax = fig.add_axes((0.50, 0.14, 0.22, 0.72))
    tt = np.arange(t)
    ax.plot(tt, r.curves["LV"], color="#d62728", label="LV")
    ax.plot(tt, r.curves["RV"], color="#1f77b4", label="RV")
    ax.axvline(0, color="0.5", ls=":", lw=0.8)
    ax.axvline(r.es_frame, color="0.5", ls="--", lw=0.8)
    ax.set_xlabel("frame (0 = ED, dashed = ES)", fontsize=8)
    ax.set_ylabel("volume (mL)", fontsize=8)
    ax.legend(fontsize=7, frameon=False)
    ax.tick_params(labelsize=7)
    lines = ["        generated" + ("    model" if r.expected else "")]
    for k, units in READOUT_KEYS:
        v = f"{k:6s}{r.phenotypes[k]:9.1f}"
        if r.expected:
            v += f"  {r.expected[k]:7.1f}"
        lines.append(f"{v} {units}")
    desc = [f"{k} = {v:g}" for k, v in r.conditions.items()]
    fig.text(0.75, 0.86, "\n".join(lines), family="monospace", fontsize=8, va="top")
    fig.text(0.75, 0.50, "\n".join(desc) + f"\nseed {r.seed}, guidance {r.guidance:g}", fontsize=7, va="top")
    fig.suptitle("Generated heart for the chosen covariates (outlines: LV red, myocardium green, RV blue)", fontsize=9)
    return fig


def heart_figure(
    labels: np.ndarray, spacing: Sequence[float], frames: Sequence[int], names: Sequence[str], *, title: str = ""
) -> Any:
    """A 3-D view of a generated heart: plotly ``Mesh3d`` surfaces (marching cubes of each structure's
    mask, :func:`skimage.measure.marching_cubes` with the voxel size) for each frame, side by side.

    Local adapter: the kit's shared 3-D heart view lives in ``cmrkit.interactive`` on another branch;
    this function is the small version chapter 6 needs until they are unified.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
    from skimage.measure import marching_cubes

    structures = {
        1: ("LV blood pool", "#d62728", 0.35),
        2: ("LV myocardium", "#2ca02c", 0.6),
        3: ("RV blood pool", "#1f77b4", 0.35),
    }
    lab = np.asarray(labels)
    if lab.ndim != 4:
        raise ValueError(f"labels: expected (X, Y, Z, T), got shape {lab.shape}")
    sp = tuple(float(v) for v in spacing)
    fig = make_subplots(rows=1, cols=len(frames), specs=[[{"type": "scene"}] * len(frames)], subplot_titles=list(names))
    for c, f in enumerate(frames, start=1):
        for k, (name, colour, opacity) in structures.items():
            m = np.pad((lab[..., int(f)] == k).astype(np.float32), 1)
            if m.max() <= 0.5:
                continue
            v, tri, _, _ = marching_cubes(m, level=0.5, spacing=sp)
            fig.add_trace(
                go.Mesh3d(
                    x=v[:, 0],
                    y=v[:, 1],
                    z=v[:, 2],
                    i=tri[:, 0],
                    j=tri[:, 1],
                    k=tri[:, 2],
                    color=colour,
                    opacity=opacity,
                    name=name,
                    showlegend=c == 1,
                    hovertemplate=f"{name}<extra></extra>",
                ),
                row=1,
                col=c,
            )
    scene = {
        "aspectmode": "data",
        "zaxis": {"autorange": "reversed"},
        "xaxis_title": "x (mm)",
        "yaxis_title": "y (mm)",
        "zaxis_title": "slice (mm)",
    }
    fig.update_layout(
        title=title or None,
        height=420,
        margin={"l": 0, "r": 0, "t": 40, "b": 0},
        template="plotly_white",
        **{f"scene{'' if c == 1 else c}": scene for c in range(1, len(frames) + 1)},
    )
    return fig


class ConditionSliders:
    """ipywidgets UI over :func:`render` (build with :meth:`widget`; nothing renders per drag event).

    Controls: age, height, weight, SBP, DBP (sliders over the model's allowed ranges, reporting on
    release), sex, smoking and alcohol (toggle buttons over the levels seen in the cohort), seed and
    guidance, and a Generate button. Any change re-renders once; :attr:`last` holds the latest
    :class:`Rendered`.
    """

    def __init__(
        self,
        generator: Generator,
        *,
        conditions: Mapping[str, Any] | None = None,
        seed: int = 0,
        guidance: float = 1.0,
        heart: bool = True,
    ):
        import ipywidgets as W

        self.generator = generator
        self.heart = bool(heart)
        space = generator.space
        start = space.validate(conditions) if conditions is not None else space.validate(space.defaults())
        self.controls: dict[str, Any] = {}
        for name in space.names:
            cov, s = space.covariate(name), space.stats[name]
            label = f"{name} ({cov.units})" if cov.units else name
            if cov.continuous:
                step = 0.5 if s["max"] - s["min"] > 5 else 0.1
                self.controls[name] = W.FloatSlider(
                    value=float(start[name]),
                    min=s["min"],
                    max=s["max"],
                    step=step,
                    description=label,
                    continuous_update=False,
                    readout_format=".1f",
                    style={"description_width": "110px"},
                    layout=W.Layout(width="420px"),
                )
            else:
                options = [(cov.levels[i], i) for i in s["observed"]]
                self.controls[name] = W.ToggleButtons(
                    options=options,
                    value=int(start[name]),
                    description=name,
                    style={"description_width": "110px", "button_width": "80px"},
                )
        self.seed = W.BoundedIntText(
            value=int(seed),
            min=0,
            max=2**31 - 1,
            description="seed",
            style={"description_width": "110px"},
            layout=W.Layout(width="220px"),
        )
        self.guidance = W.FloatSlider(
            value=float(guidance),
            min=0.0,
            max=5.0,
            step=0.25,
            description="guidance",
            continuous_update=False,
            style={"description_width": "110px"},
            layout=W.Layout(width="420px"),
        )
        self.button = W.Button(description="Generate", button_style="primary", icon="heart")
        self.status = W.HTML()
        self.readout = W.HTML()
        self.image = W.Output()
        self.heart_out = W.Output()
        self.last: Rendered | None = None
        for w in (*self.controls.values(), self.seed, self.guidance):
            w.observe(self._changed, names="value")
        self.button.on_click(lambda _b: self.update())
        left = W.VBox([*self.controls.values(), self.seed, self.guidance, self.button, self.status])
        right = W.VBox([self.readout])
        self.box = W.VBox([W.HBox([left, right]), self.image, self.heart_out])
        self.box.add_class("cmrkit-condition-sliders")

    def values(self) -> dict[str, Any]:
        return {n: w.value for n, w in self.controls.items()}

    def _changed(self, change: Any) -> None:
        self.update()

    def update(self) -> Rendered | None:
        """Render the current controls (errors are shown in the status line, never raised into the UI)."""
        import matplotlib.pyplot as plt
        from IPython.display import display

        from .models.conditioning import ConditionError

        self.status.value = "<i>generating…</i>"
        try:
            r = render(self.generator, self.values(), seed=int(self.seed.value), guidance=float(self.guidance.value))
        except (ConditionError, ValueError) as exc:
            self.status.value = f"<span style='color:#c0392b'>{html.escape(str(exc))}</span>"
            return None
        self.last = r
        self.readout.value = r.readout_html()
        with self.image:
            self.image.clear_output(wait=True)
            display(r.figure)
        plt.close(r.figure)
        if self.heart:
            fig = heart_figure(
                r.labels, self.generator.spacing, [0, r.es_frame], ["ED (frame 0)", f"ES (frame {r.es_frame})"]
            )
            with self.heart_out:
                self.heart_out.clear_output(wait=True)
                display(fig)
        self.status.value = f"generated in {r.seconds:.2f} s (seed {r.seed}, guidance {r.guidance:g}, heart {r.key})"
        return r

    def widget(self) -> Any:
        """The widget box (renders the current controls once first)."""
        if self.last is None:
            self.update()
        return self.box
