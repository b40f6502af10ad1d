"""Raw frames of one case -> (D, size, size) volumes, slices ordered base to apex.

Steps, with MONAI transforms on channel-first MetaTensors (the affine travels with them):

1. ``Orientation`` to ``data.orientation`` (e.g. RAS), so every site's scans share axes.
2. ``Spacing`` in-plane to ``data.spacing`` mm; the slice spacing is kept (cine stacks have
   5-10 mm gaps, interpolating across them would invent anatomy).
3. ``SpatialCrop`` + ``ResizeWithPadOrCrop`` to ``data.image_size`` square around the
   centre of the heart's bounding box (from the case's first mask), or the image centre.
4. The slice axis (the file's third voxel axis, wherever the reorientation put it) moves
   first; for cardiac datasets the stack is flipped when needed so that index 0 is the base
   (the heart's cross-section shrinks toward the apex, so the half of the stack with more
   labelled area is the base half).

Intensities are left as they are: per-volume normalisation (``data.normalise``) is done when
slices are built (``fcl_ray/data/slices.py``), so the cache does not depend on it.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from fcl_ray.config import DataConfig
from fcl_ray.data.readers.common import RawFrame
from fcl_ray.data.synthetic import Volume


def _orient_and_resample(frame: RawFrame, d: DataConfig) -> tuple[np.ndarray, Optional[np.ndarray], int]:
    """Reoriented, in-plane resampled image and label (X', Y', Z'), and the slice axis."""
    import nibabel as nib
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    # Where the file's slice axis (voxel axis 2) lands after reorientation, as MONAI computes it.
    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(frame.affine),
                                           nib.orientations.axcodes2ornt(tuple(d.orientation)))
    slice_axis = int(ornt[2, 0])
    pixdim = [d.spacing] * 3
    pixdim[slice_axis] = -1.0                      # non-positive: keep the stored spacing
    orient = Orientation(axcodes=d.orientation, labels=None)
    affine = torch.as_tensor(frame.affine)
    image = MetaTensor(torch.from_numpy(frame.image[None]), affine=affine)
    image = Spacing(pixdim=pixdim, mode="bilinear")(orient(image))
    label = None
    if frame.label is not None:
        lab = MetaTensor(torch.from_numpy(frame.label[None].astype(np.float32)), affine=affine)
        label = Spacing(pixdim=pixdim, mode="nearest")(orient(lab))
    return (image[0].numpy(), None if label is None else label[0].numpy().round(), slice_axis)


def _crop(array: np.ndarray, centre: list[int], slice_axis: int, size: int,
          mode: str) -> np.ndarray:
    from monai.transforms import ResizeWithPadOrCrop, SpatialCrop

    roi = [size] * 3
    roi[slice_axis] = array.shape[slice_axis]
    x = torch.from_numpy(np.ascontiguousarray(array)[None])
    x = SpatialCrop(roi_center=centre, roi_size=roi)(x)
    roi[slice_axis] = -1                           # non-positive: keep every slice
    x = ResizeWithPadOrCrop(roi, mode=mode)(x)
    return np.asarray(x[0])


def _centre(label: Optional[np.ndarray], shape: tuple[int, ...]) -> list[int]:
    """In-plane centre of the foreground's bounding box (all slices), else of the image."""
    if label is not None and label.any():
        coords = np.argwhere(label > 0)
        return [int(round((lo + hi) / 2)) for lo, hi in zip(coords.min(0), coords.max(0))]
    return [s // 2 for s in shape]


def base_first(label: np.ndarray) -> bool:
    """True when a (D, H, W) mask already runs base to apex (more area in its first half)."""
    area = label.reshape(len(label), -1).astype(bool).sum(1)
    half = len(area) // 2
    return area[:half].sum() >= area[len(area) - half:].sum()


def preprocess_case(frames: list[RawFrame], d: DataConfig, cardiac: bool) -> list[Volume]:
    """The case's frames as volumes of shape (D, image_size, image_size)."""
    resampled = [_orient_and_resample(f, d) for f in frames]
    ref_label = next((lab for _, lab, _ in resampled if lab is not None), None)
    volumes, flip = [], None
    for frame, (image, label, axis) in zip(frames, resampled):
        # Every frame of a case shares the geometry, so the first mask's box centres them all.
        box = ref_label if ref_label is not None and ref_label.shape == image.shape else label
        centre = _centre(box, image.shape)
        image = np.moveaxis(_crop(image, centre, axis, d.image_size, "constant"), axis, 0)
        if label is not None:
            label = np.moveaxis(_crop(label, centre, axis, d.image_size, "constant"), axis, 0)
            label = label.astype(np.uint8)
        if flip is None:
            # Decided once per case (from its first mask) so all its frames agree.
            flip = cardiac and label is not None and not base_first(label)
        if flip:
            image = image[::-1]
            label = None if label is None else label[::-1]
        volumes.append(Volume(frame.name, np.ascontiguousarray(image, dtype=np.float32),
                              None if label is None else np.ascontiguousarray(label)))
    return volumes
