"""Raw frames of one case -> (D, size, size) volumes, slices ordered base to apex.

Steps, with MONAI transforms on channel-first MetaTensors (the affine travels with them):

1. ``Orientation`` to ``data.orientation`` (e.g. RAS), so every site's scans share axes.
2. ``Spacing`` in-plane to ``data.spacing`` mm; the slice spacing is kept (cine stacks have
   5-10 mm gaps, interpolating across them would invent anatomy).
3. ``SpatialCrop`` + ``ResizeWithPadOrCrop`` to ``data.image_size`` square around an
   in-plane centre chosen by ``data.crop`` (:func:`crop_centre`), once per case so that all
   its frames share it: ``centre`` the image centre; ``intensity`` the centre of mass of the
   brightest structures of the case's first frame (blood pools), favouring the middle of the
   field of view; ``label`` the centre of the heart's bounding box in the case's first mask.
   Only ``label`` looks at a mask, and it does so for test cases too (test cases then get a
   crop centred on their answer), so it is kept as an option, not the default.
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


def intensity_centre(image: np.ndarray, slice_axis: int, spacing: float) -> list[int]:
    """Centre of the brightest structures, without any mask.

    In cine MRI (bSSFP) the blood pools are the brightest tissue and sit on most slices, so:
    per-volume 1-99 % intensity range, mean over slices, 15 mm Gaussian smoothing (the scale
    of the LV and RV pools together, which outweighs smaller bright vessels, fat or bowel),
    times a broad prior on the middle of the field of view (sigma a third of it: scans are
    planned around the heart, and bright subcutaneous fat lies at the edges), then the centre
    of mass of the top 3 % of that score. (On the phantom, 5 mm smoothing or no prior let
    distractors pull the centre further off.)
    """
    from scipy.ndimage import gaussian_filter

    stack = np.moveaxis(image, slice_axis, 0).astype(np.float64)
    lo, hi = np.percentile(stack, [1, 99])
    mean = np.clip((stack - lo) / max(hi - lo, 1e-8), 0, 1).mean(0)
    score = gaussian_filter(mean, sigma=max(1.0, 15.0 / spacing))
    grid = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in score.shape], indexing="ij")
    score *= np.exp(-0.5 * sum((g / (n / 3)) ** 2 for g, n in zip(grid, score.shape)))
    weight = np.clip(score - np.quantile(score, 0.97), 0, None)
    if weight.sum() <= 0:                              # flat image: fall back to the centre
        return [n // 2 for n in image.shape]
    in_plane = [int(round((g * weight).sum() / weight.sum() + (n - 1) / 2))
                for g, n in zip(grid, score.shape)]
    return in_plane[:slice_axis] + [image.shape[slice_axis] // 2] + in_plane[slice_axis:]


def crop_centre(rule: str, image: np.ndarray, label: Optional[np.ndarray], slice_axis: int,
                spacing: float) -> list[int]:
    """Where the crop to ``data.image_size`` is centred (voxel indices, all three axes)."""
    if rule == "label":
        return _centre(label, image.shape)
    if rule == "intensity":
        return intensity_centre(image, slice_axis, spacing)
    return [n // 2 for n in image.shape]               # "centre"


def base_first(label: np.ndarray) -> bool:
    """True when a (D, H, W) mask already runs base to apex (more area in its first half)."""
    area = label.reshape(len(label), -1).astype(bool).sum(1)
    half = len(area) // 2
    return area[:half].sum() >= area[len(area) - half:].sum()


def preprocess_case(frames: list[RawFrame], d: DataConfig, cardiac: bool) -> list[Volume]:
    """The case's frames as volumes of shape (D, image_size, image_size)."""
    resampled = [_orient_and_resample(f, d) for f in frames]
    ref_image, _, ref_axis = resampled[0]
    ref_label = (next((lab for _, lab, _ in resampled if lab is not None), None)
                 if d.crop == "label" else None)      # the other rules never see a mask
    # Every frame of a case shares the geometry, so one centre (from the first frame, or for
    # ``label`` the first mask) crops them all.
    ref_centre = crop_centre(d.crop, ref_image, ref_label, ref_axis, d.spacing)
    volumes, flip = [], None
    for frame, (image, label, axis) in zip(frames, resampled):
        if image.shape == ref_image.shape:
            centre = ref_centre
        else:                                          # odd frame geometry: its own centre
            centre = crop_centre(d.crop, image, label if d.crop == "label" else None, axis,
                                 d.spacing)
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
        volumes.append(Volume(frame.volume_id, np.ascontiguousarray(image, dtype=np.float32),
                              None if label is None else np.ascontiguousarray(label)))
    return volumes
