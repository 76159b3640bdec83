"""Embedded default data: a physics-informed biventricular phantom cohort with known ground truth.

A subject is an analytic heart (:mod:`.anatomy`, :mod:`.motion`) in a static torso (:mod:`.torso`),
rendered as UK Biobank-like bSSFP cine with labels on every frame and SPAMM tagging on three
short-axis slices (:mod:`.render`, :mod:`.contrast`, :mod:`.tagging`), with covariates and a
covariate -> phenotype model (:mod:`.covariates`, ``phenotype_model.yaml``) that the anatomy
realises. Ground truth: landmarks, exact strain, displacement fields, volume curves
(:mod:`.writer` documents the files).

Public API::

    params = sample_cohort_params(n, seed=0, pathology_fraction=0.15)
    subj = generate_subject(params[0], geometry=Geometry(), rng=None)   # in memory
    write_subject(subj, "out/PH0000")
    generate_cohort("data/phantom/demo", 200, seed=0, geometry=Geometry(), workers=2)
    Geometry(tag_phase="anchored")   # controls: grid fixed to the LV centre ("random": per-subject draw);
                                     # default "scanner": grid fixed in scanner coordinates
    ensure_cohort(cmrkit.config.load("smoke"))
    gt = read_ground_truth("data/phantom/demo/PH0000")
"""

from .cohort import (
    COHORT_JSON,
    MANIFEST,
    cohort_spec,
    ensure_cohort,
    ensure_phantom,
    generate_cohort,
    read_cohort_spec,
    sample_cohort_params,
)
from .covariates import bsa_mosteller, load_phenotype_model
from .geometry import Geometry
from .subject import (
    PHENOTYPES,
    TAG_SLICE_NAMES,
    PhantomSubject,
    SubjectParams,
    build_scene,
    generate_subject,
    sample_subject_params,
    with_pathology,
)
from .tagging import landmark_strain
from .writer import SUBJECT_FILES, read_ground_truth, write_subject

__all__ = [
    "Geometry",
    "SubjectParams",
    "PhantomSubject",
    "sample_subject_params",
    "sample_cohort_params",
    "with_pathology",
    "generate_subject",
    "build_scene",
    "write_subject",
    "read_ground_truth",
    "generate_cohort",
    "ensure_cohort",
    "ensure_phantom",
    "cohort_spec",
    "read_cohort_spec",
    "landmark_strain",
    "load_phenotype_model",
    "bsa_mosteller",
    "PHENOTYPES",
    "TAG_SLICE_NAMES",
    "SUBJECT_FILES",
    "MANIFEST",
    "COHORT_JSON",
]
