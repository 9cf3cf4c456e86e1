"""Small .npz helpers shared by the scripts in this folder (not a command-line tool).

save_npz writes one uncompressed little-endian .npy member per key, like numpy.savez, but
accepts any key (numpy.savez's keyword form breaks on names such as "file"). Keys may
contain "/" or ":" (ONNX value names often do); the member is then "<key>.npy" verbatim.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, arr in arrays.items():
            arr = np.asarray(arr)
            if arr.dtype.byteorder == ">":
                arr = arr.astype(arr.dtype.newbyteorder("<"))
            with zf.open(key + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(arr, order="C"), allow_pickle=False)
    tmp.replace(path)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
