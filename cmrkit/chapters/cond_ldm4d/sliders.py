"""Chapter 6 condition sliders: the run's models behind :mod:`cmrkit.condition_sliders`."""

from __future__ import annotations

from typing import Any

from ...report import Report
from .data import SequenceData, Trained
from .generation import guidance_weight


# =============================================================================================== sliders
def slider_generator(cfg: Any, data: SequenceData, autoencoder: Trained, diffusion: Trained) -> Any:
    """The :class:`cmrkit.condition_sliders.Generator` of this run's models (DDIM ``ch6.ddim_steps``)."""
    from ...condition_sliders import Generator

    return Generator(
        autoencoder.model,
        diffusion.model,
        data.reference_spacing,
        ddim_steps=int(cfg.ch6.ddim_steps),
        device=str(cfg.device),
        true_model=cfg.dataset == "phantom",
    )


def condition_sliders(
    cfg: Any, rep: Report, data: SequenceData, autoencoder: Trained, diffusion: Trained, *, interactive: bool = False
) -> Any:
    """Condition sliders: eight covariate controls, seed and guidance
    (:class:`cmrkit.condition_sliders.ConditionSliders`).

    The default covariates (the training means; female, never smoked, the lowest alcohol level seen)
    are rendered with :func:`cmrkit.condition_sliders.render` and saved as figure ``ch6_sliders`` either
    way; ``interactive=True`` returns the widget (with the 3-D heart at ED and ES), else the
    :class:`~cmrkit.condition_sliders.Rendered` of the defaults.
    """
    from ...condition_sliders import ConditionSliders, render
    from ...figures import show

    gen = slider_generator(cfg, data, autoencoder, diffusion)
    defaults = gen.space.defaults()
    r = render(gen, defaults, seed=int(cfg.seed), guidance=guidance_weight(cfg))
    rep.save_figure(
        r.figure,
        "ch6_sliders",
        caption=f"Condition sliders, static view of the default covariates: {r.readout}",
        extra={
            "conditions": r.conditions,
            "seed": r.seed,
            "guidance": r.guidance,
            "phenotypes": r.phenotypes,
            "expected": r.expected,
        },
    )
    if not interactive:
        show(r.figure)
        print(r.readout)
        return r
    import matplotlib.pyplot as plt

    plt.close(r.figure)
    return ConditionSliders(gen, conditions=defaults, seed=int(cfg.seed), guidance=guidance_weight(cfg)).widget()
