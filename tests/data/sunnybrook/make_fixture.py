"""Rebuild this fixture from the full Sunnybrook case in ``../shared/realdata/sunnybrook``.

Run from the repository root: ``python tests/data/sunnybrook/make_fixture.py``.
Takes slices 4 and 5 (0-based, along the slice normal) at cardiac phases 0, 6 and 19 of series
SCD0000301 (files ``n.dcm`` with slice ``(n-1)//20`` and phase ``(n-1)%20``), crops every image to
112 x 112 pixels (rows 68:180, columns 72:184), shifts ``ImagePositionPatient`` so that the
cropped pixels keep their world positions, and shifts the matching manual contours by the same
offset. Pixel values and every other geometry tag are unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[2].parent / "shared" / "realdata" / "sunnybrook" / "final_data"
ROW0, COL0, SIZE = 68, 72, 112
FILES = [81, 87, 100, 101, 107, 120]  # slice 4: phases 0, 6, 19; slice 5: phases 0, 6, 19


def main() -> None:
    out = HERE / "SCD0000301"
    out.mkdir(exist_ok=True)
    for n in FILES:
        ds = pydicom.dcmread(SRC / "dicoms" / "SCD0000301" / f"{n}.dcm")
        arr = ds.pixel_array[ROW0 : ROW0 + SIZE, COL0 : COL0 + SIZE].copy()
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
        dr, dc = (float(v) for v in ds.PixelSpacing)  # row spacing, column spacing
        ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
        ipp = ipp + COL0 * dc * iop[:3] + ROW0 * dr * iop[3:]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp]
        ds.Rows, ds.Columns = SIZE, SIZE
        ds.PixelData = arr.astype(arr.dtype).tobytes()
        ds.ImageType = ["DERIVED", "PRIMARY", "OTHER"]
        ds.DerivationDescription = f"cropped rows {ROW0}:{ROW0 + SIZE} cols {COL0}:{COL0 + SIZE} (cmrkit fixture)"
        for tag in ("SmallestImagePixelValue", "LargestImagePixelValue"):
            if tag in ds:
                delattr(ds, tag)
        ds.save_as(out / f"{n}.dcm", enforce_file_format=True)
    cdir = out / "contours"  # beside the images, where cmrkit.io.dicom.find_contours looks first
    cdir.mkdir(exist_ok=True)
    for kind in ("i", "o"):
        for n in FILES:
            src = SRC / "contourfiles" / "SC-HF-I-4" / f"{kind}-contours" / f"IM-0001-{n:04d}-{kind}contour-manual.txt"
            if not src.is_file():
                continue
            pts = np.loadtxt(src) - np.array([COL0, ROW0])  # x = column, y = row
            np.savetxt(cdir / src.name, pts, fmt="%.2f")


if __name__ == "__main__":
    main()
