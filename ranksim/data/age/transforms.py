"""Age images: loading a JPEG, and the SPEC 6 transforms, on JPEGs and on cached uint8 images.

**Plain path.** :func:`load_image` opens a JPEG as RGB; :func:`plain_train_transform` and
:func:`plain_eval_transform` are the SPEC 6 torchvision pipelines, written once here for every
reader.

**Cached path.** Both pipelines start with ``Resize((S, S))``; the image cache
(:mod:`~ranksim.data.age.image_cache`) stores exactly that step's output (:func:`resize_to_array`)
as ``uint8``. The rest of the pipeline (:func:`cached_train_transform`,
:func:`cached_eval_transform`) reproduces the torchvision steps on the uint8 tensor, bit for bit,
drawing from torch's global RNG in the same order as torchvision (crop row, crop column, flip).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision import transforms

from ranksim.errors import UserError

IMG_SIZE = 224          # SPEC 6: every face is resized to 224x224
CROP_PADDING = 16       # SPEC 6: RandomCrop(224, padding=16)
MEAN = STD = (0.5, 0.5, 0.5)


# --------------------------------------------------------------------------------------------
# Plain path


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as an RGB PIL image; a missing or unreadable file is a :class:`UserError`
    that names it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # convert() loads the pixels, so truncation shows here
    except FileNotFoundError:
        raise UserError(f"image {path} does not exist; prepare the dataset again or fix the split file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UserError(f"image {path} is damaged or not an image ({err}); replace it (prepare the dataset "
                        f"again) or remove its row from the split file") from None


def _resize(size: int) -> transforms.Resize:
    # torchvision's default: bilinear, antialiased; on PIL images this is PIL's own resize.
    return transforms.Resize((size, size))


def plain_train_transform(image_size: int = IMG_SIZE, crop_padding: int = CROP_PADDING) -> transforms.Compose:
    """SPEC 6 training transform of a PIL image: resize, padded random crop, flip, to [-1, 1]."""
    return transforms.Compose([
        _resize(image_size),
        transforms.RandomCrop(image_size, padding=crop_padding),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])


def plain_eval_transform(image_size: int = IMG_SIZE) -> transforms.Compose:
    """SPEC 6 validation and test transform of a PIL image: resize, to [-1, 1]."""
    return transforms.Compose([_resize(image_size), transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def resize_to_array(img: Image.Image, image_size: int = IMG_SIZE) -> np.ndarray:
    """The first step of both transforms, as the cache stores it: ``(S, S, 3)`` uint8."""
    return np.asarray(_resize(image_size)(img), dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# Cached path


def _check_chw_u8(img: torch.Tensor) -> None:
    if not isinstance(img, torch.Tensor) or img.dtype != torch.uint8 or img.dim() != 3 or img.shape[0] != 3:
        shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        dtype = img.dtype if isinstance(img, torch.Tensor) else None
        raise ValueError(f"expected a uint8 tensor of shape (3, H, W), got {shape} {dtype}")


def _to_normalised_float(img: torch.Tensor) -> torch.Tensor:
    # The same float operations as ToTensor (x / 255) and Normalize ((x - 0.5) / 0.5), so the result
    # is bit-identical to the plain path.
    return img.to(torch.float32).div_(255).sub_(MEAN[0]).div_(STD[0])


def crop_flip_u8(img: torch.Tensor, top: int, left: int, flip: bool, padding: int = CROP_PADDING) -> torch.Tensor:
    """``RandomCrop(padding=p)`` with its offsets given, then an optional horizontal flip, on uint8.

    The input ``(3, H, W)`` is thought of as zero-padded by ``padding`` on every side, and the
    ``(H, W)`` window at ``(top, left)`` of that padded image is returned, without building it: a
    zero tensor receives the overlapping part of the input.
    """
    _, h, w = img.shape
    out = torch.zeros_like(img)
    r0, c0 = top - padding, left - padding          # window origin in input coordinates
    rs, re = max(0, r0), min(h, r0 + h)
    cs, ce = max(0, c0), min(w, c0 + w)
    if rs < re and cs < ce:
        out[:, rs - r0:re - r0, cs - c0:ce - c0] = img[:, rs:re, cs:ce]
    return out.flip(-1) if flip else out


def cached_train_transform(img_u8_chw: torch.Tensor, crop_padding: int = CROP_PADDING) -> torch.Tensor:
    """The training transform after the resize, on a cached ``(3, S, S)`` uint8 image.

    Draws ``torch.randint(0, 2p + 1)`` for the row, then for the column, then ``torch.rand(1) <
    0.5`` for the flip, from torch's global RNG, as torchvision's RandomCrop and
    RandomHorizontalFlip do: under the same seed it returns what :func:`plain_train_transform`
    returns for the image the cache entry came from.

    Returns:
        float32 ``(3, S, S)`` in [-1, 1].
    """
    _check_chw_u8(img_u8_chw)
    span = 2 * crop_padding + 1
    top = int(torch.randint(0, span, size=(1,)).item())
    left = int(torch.randint(0, span, size=(1,)).item())
    flip = bool(torch.rand(1) < 0.5)
    return _to_normalised_float(crop_flip_u8(img_u8_chw, top, left, flip, crop_padding))


def cached_eval_transform(img_u8_chw: torch.Tensor) -> torch.Tensor:
    """The evaluation transform after the resize: float32 ``(3, S, S)`` in [-1, 1]."""
    _check_chw_u8(img_u8_chw)
    return _to_normalised_float(img_u8_chw)
