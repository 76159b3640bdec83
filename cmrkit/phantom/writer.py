"""Write a phantom subject in the UK Biobank (ukbb_cardiac) layout and read its ground truth.

Subject folder (``PH0000/``)::

    sa.nii.gz              float32 (X, Y, Z, T) short-axis cine, slice 0 basal; zooms (px, px, spacing, frame ms)
    label_sa.nii.gz        uint8   (X, Y, Z, T) labels 0 bg / 1 LV blood / 2 LV myocardium / 3 RV blood, every frame
    sa_ED.nii.gz  sa_ES.nii.gz              float32 (X, Y, Z) cine at ED (frame 0) / ES
    label_sa_ED.nii.gz  label_sa_ES.nii.gz  uint8 (X, Y, Z)
    tag_1.nii.gz tag_2.nii.gz tag_3.nii.gz  float32 (Xt, Yt, 1, Tt) tagging: basal, mid, apical; each affine places
                                            the slice at the centre plane of cine slice ``tag_slice_index[k]``
    ground_truth.h5        landmarks, exact and landmark strain, displacement fields, volume curves (below)
    subject.json           manifest row, generation parameters and realised targets

All affines map voxel ``(i, j, k)`` to RAS+ world mm; qform and sform are both set (code 1, scanner).

``ground_truth.h5`` (``s`` = tagging slice basal/mid/apical, ``t`` = tagging frame, 168 = 24 spokes x 7
rings, index ``spoke*7 + k``, ``k = 0`` endocardium, ``k = 6`` epicardium, frame 0 = ED reference)::

    landmarks/px            (3, Tt, 2, 168) float32  pixel coords in tag_{s+1}.nii.gz: row 0 = i (x), row 1 = j (y)
    landmarks/mm            (3, Tt, 2, 168) float32  the same times the tagging pixel size (image-plane mm)
    landmarks/world         (3, Tt, 3, 168) float32  RAS+ mm
    strain/exact/ecc        (3, Tt)        exact Green E_cc of the analytic motion, mean of the 7 rings
    strain/exact/ecc_ring   (3, Tt, 7)     per ring (mean over material angle)
    strain/exact/err        (3, Tt)        exact Green E_rr, mean over the wall (7 rings x angle)
    strain/landmark/ecc, ecc_ring, err     Ferdian definitions applied to landmarks/mm
    displacement/field      (3, Tt, 2, Xs, Ys) float32 mm; Lagrangian in-plane displacement of the material
                            at tagging pixel centre (stride*a, stride*b) at ED (frame 0), components along
                            image i and j. stride = displacement/stride: 1 for tagging matrices up to 128,
                            2 above (the default 166 matrix gives 83 x 83). Inside the LV wall and cavity it is
                            the analytic map; outside, the decaying epicardial extension used for rendering.
    displacement/myocardium_mask_ed (3, Xs, Ys) uint8 LV wall at ED on the same (strided) grid
    displacement/stride     () int32
    volumes/lv_target_ml, rv_target_ml    (Tc,) closed-form slice-sum volume curves (the targets)
    volumes/lv_ml, myo_ml, rv_ml          (Tc,) measured from label_sa.nii.gz (count x voxel volume)
    times/cine_ms (Tc,), times/tag_ms (Tt,)  trigger times after the R wave
    tag_slice_index         (3,) int32   cine slice index of each tagging slice
    attrs: subject_id, ed_frame, es_frame, heart_rate_bpm, cmrkit_version, conventions,
           params_json, targets_json, measured_json, geometry_json, info_json
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import atomic_path, atomic_write
from .subject import TAG_SLICE_NAMES, PhantomSubject

__all__ = ["write_subject", "read_ground_truth", "write_nifti", "SUBJECT_FILES", "CONVENTIONS"]

SUBJECT_FILES = (
    "sa.nii.gz",
    "label_sa.nii.gz",
    "sa_ED.nii.gz",
    "sa_ES.nii.gz",
    "label_sa_ED.nii.gz",
    "label_sa_ES.nii.gz",
    "tag_1.nii.gz",
    "tag_2.nii.gz",
    "tag_3.nii.gz",
    "ground_truth.h5",
    "subject.json",
)

CONVENTIONS = (
    "landmarks: 24 spokes x 7 rings, index spoke*7+k, k=0 endocardium, k=6 epicardium; spoke 0 at the anterior "
    "RV insertion, spokes ordered by increasing angle from image axis i towards j; row 0 = i (x), row 1 = j (y); "
    "frame 0 = ED reference (tags applied at the R wave). Strains are Green strains; exact = analytic motion, "
    "landmark = Ferdian et al. 2020 definitions on landmarks/mm. Tagging slices 1/2/3 = basal/mid/apical."
)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_nifti(path: str | os.PathLike[str], data: np.ndarray, affine: np.ndarray, zooms: tuple[float, ...]) -> None:
    """Write ``data`` with ``affine`` (qform and sform, scanner code) and ``zooms`` (mm, mm, mm[, ms])."""
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(data), np.asarray(affine, float))
    hdr = img.header
    hdr.set_data_dtype(np.asarray(data).dtype)
    hdr.set_xyzt_units("mm", "msec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    hdr.set_zooms(tuple(float(z) for z in zooms[: data.ndim]))
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def write_subject(subject: PhantomSubject, folder: str | os.PathLike[str]) -> Path:
    """Write one subject's files into ``folder`` (created if needed; files are replaced atomically)."""
    import h5py

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    g = subject.geometry
    frame_ms = float(subject.info["rr_ms"]) / subject.cine.shape[3]
    zooms4 = (g.pixel_mm, g.pixel_mm, g.slice_spacing_mm, frame_ms)
    write_nifti(folder / "sa.nii.gz", subject.cine, subject.affine, zooms4)
    write_nifti(folder / "label_sa.nii.gz", subject.labels, subject.affine, zooms4)
    for tag, idx in (("ED", subject.ed_frame), ("ES", subject.es_frame)):
        write_nifti(folder / f"sa_{tag}.nii.gz", subject.cine[..., idx], subject.affine, zooms4[:3])
        write_nifti(folder / f"label_sa_{tag}.nii.gz", subject.labels[..., idx], subject.affine, zooms4[:3])
    tag_dt = float(np.diff(subject.tag_times_ms).mean()) if len(subject.tag_times_ms) > 1 else 0.0
    for s in range(3):
        vol = subject.tagging[s][:, :, None, :]
        write_nifti(
            folder / f"tag_{s + 1}.nii.gz",
            vol,
            subject.tag_affines[s],
            (g.tag_pixel_mm, g.tag_pixel_mm, g.tag_slice_thickness_mm, tag_dt),
        )
    gt = subject.ground_truth
    comp = dict(compression="gzip", compression_opts=1, shuffle=True)
    with atomic_path(folder / "ground_truth.h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("landmarks/px", data=gt["landmarks_px"], **comp)
            f.create_dataset("landmarks/mm", data=gt["landmarks_mm"], **comp)
            f.create_dataset("landmarks/world", data=gt["landmarks_world"], **comp)
            f.create_dataset("strain/exact/ecc", data=gt["ecc_exact"])
            f.create_dataset("strain/exact/ecc_ring", data=gt["ecc_ring_exact"])
            f.create_dataset("strain/exact/err", data=gt["err_exact"])
            f.create_dataset("strain/landmark/ecc", data=gt["ecc_landmark"])
            f.create_dataset("strain/landmark/ecc_ring", data=gt["ecc_ring_landmark"])
            f.create_dataset("strain/landmark/err", data=gt["err_landmark"])
            ds = f.create_dataset("displacement/field", data=gt["displacement"], chunks=True, **comp)
            ds.attrs["stride"] = int(gt["displacement_stride"])
            ds.attrs["units"] = "mm"
            ds.attrs["axes"] = "slice, frame, component (0 along image i, 1 along image j), i/stride, j/stride"
            dm = f.create_dataset("displacement/myocardium_mask_ed", data=gt["myocardium_mask_ed"], **comp)
            dm.attrs["stride"] = int(gt["displacement_stride"])
            f.create_dataset("displacement/stride", data=np.int32(gt["displacement_stride"]))
            for k in ("lv", "rv"):
                f.create_dataset(f"volumes/{k}_target_ml", data=gt[f"{k}_volume_target_ml"])
            for k in ("lv", "myo", "rv"):
                f.create_dataset(f"volumes/{k}_ml", data=gt[f"{k}_volume_ml"])
            f.create_dataset("times/cine_ms", data=gt["cine_times_ms"])
            f.create_dataset("times/tag_ms", data=gt["tag_times_ms"])
            f.create_dataset("tag_slice_index", data=gt["tag_slice_index"])
            a = f.attrs
            a["subject_id"] = subject.subject_id
            a["ed_frame"] = int(subject.ed_frame)
            a["es_frame"] = int(subject.es_frame)
            a["heart_rate_bpm"] = float(subject.heart_rate)
            a["tag_slice_names"] = ",".join(TAG_SLICE_NAMES)
            a["cmrkit_version"] = str(subject.info.get("cmrkit_version", ""))
            a["conventions"] = CONVENTIONS
            a["params_json"] = json.dumps(subject.params.to_dict(), default=_json_default)
            a["targets_json"] = json.dumps(subject.targets, default=_json_default)
            a["measured_json"] = json.dumps(subject.measured, default=_json_default)
            a["geometry_json"] = json.dumps(subject.geometry.to_dict(), default=_json_default)
            a["info_json"] = json.dumps(subject.info, default=_json_default)
    meta = {
        "manifest_row": subject.manifest_row(),
        "params": subject.params.to_dict(),
        "targets": subject.targets,
        "measured": subject.measured,
        "geometry": subject.geometry.to_dict(),
    }
    with atomic_write(folder / "subject.json", "w") as fh:
        json.dump(meta, fh, indent=1, default=_json_default)
    return folder


def read_ground_truth(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``ground_truth.h5`` (a file or a subject folder) into nested dicts of numpy arrays.

    Keys mirror the HDF5 groups (``gt["landmarks"]["px"]``, ``gt["strain"]["exact"]["ecc"]``, ...);
    ``gt["attrs"]`` holds the attributes with the ``*_json`` ones decoded (``params``, ``targets``,
    ``measured``, ``geometry``, ``info``).
    """
    import h5py

    p = Path(path)
    if p.is_dir():
        p = p / "ground_truth.h5"
    if not p.is_file():
        raise FileNotFoundError(f"ground-truth file {p} does not exist")
    out: dict[str, Any] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            node = out
            parts = name.split("/")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = obj[()]

    with h5py.File(p, "r") as f:
        f.visititems(visit)
        attrs: dict[str, Any] = {}
        for k, v in f.attrs.items():
            v = v.decode() if isinstance(v, bytes) else v
            if k.endswith("_json"):
                attrs[k[:-5]] = json.loads(v)
            else:
                attrs[k] = v.item() if isinstance(v, np.generic) else v
        out["attrs"] = attrs
    return out
