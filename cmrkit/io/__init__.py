"""Readers for real and phantom cardiac MRI data, all returning one :class:`Subject` record.

- ``phantom``: UK Biobank layout + cohort ``manifest.csv`` (covariates) -- :mod:`cmrkit.io.ukbb`
- ``ukbb``: ``<subject>/sa.nii.gz, label_sa*.nii.gz, sa_ED/ES, tag_1..3`` -- :mod:`cmrkit.io.ukbb`
- ``acdc``: ``patientNNN/Info.cfg, _4d, _frameMM[_gt]`` (labels remapped) -- :mod:`cmrkit.io.acdc`
- ``mnms``: ``<CODE>_sa[_gt]`` 4-D + metadata CSV, or ``<CASE>_sa_ED/ES[_gt]`` -- :mod:`cmrkit.io.mnms`
- ``ferdian``: tagging HDF5 (``image_seqs``, ``landmark_coords``, ...) -- :mod:`cmrkit.io.ferdian`
- ``dicom``: a folder of single-frame cine MR images -- :mod:`cmrkit.io.dicom`

Bad input raises :class:`DataError` (a ValueError) whose message starts with the file path.
Labels follow the kit convention 0 background, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool.
"""

from cmrkit.io.ferdian import load_ferdian_h5
from cmrkit.io.nifti import (
    LABEL_VALUES,
    DataError,
    MissingFileError,
    NiftiVolume,
    check_label_values,
    check_same_geometry,
    load_nifti,
    save_nifti,
    spacing_from_affine,
    voxel_volume_ml,
)
from cmrkit.io.readers import DATASETS, iter_subjects, load_subject
from cmrkit.io.subject import Subject, TaggingSlice

__all__ = [
    "DATASETS",
    "LABEL_VALUES",
    "DataError",
    "MissingFileError",
    "NiftiVolume",
    "Subject",
    "TaggingSlice",
    "check_label_values",
    "check_same_geometry",
    "iter_subjects",
    "load_ferdian_h5",
    "load_nifti",
    "load_subject",
    "save_nifti",
    "spacing_from_affine",
    "voxel_volume_ml",
]
