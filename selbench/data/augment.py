"""Batched augmentation and normalisation on the device: pad-and-crop, flip, cutout, per-channel scaling."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def crop_and_flip(images: Tensor, *, padding: int, flip: bool, generator: torch.Generator) -> Tensor:
    """Random crop after zero padding, and random horizontal flip, with one offset per image."""
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    return random_crops(padded, torch.arange(len(images), device=images.device), padding=padding, flip=flip,
                        generator=generator)


def random_crops(padded: Tensor, chosen: Tensor, *, padding: int, flip: bool, generator: torch.Generator) -> Tensor:
    """Images ``chosen`` of the ``padding``-padded set ``padded``, each cropped at a random offset and
    (with ``flip``) mirrored with probability 1/2.

    One gather straight from the padded set: output pixel (i, j) of image b reads padded pixel
    (oy_b + i, ox_b + j) of image ``chosen[b]``, or (oy_b + i, ox_b + W − 1 − j) when b is flipped.
    """
    channels = padded.shape[1]
    height, width = padded.shape[2] - 2 * padding, padded.shape[3] - 2 * padding
    batch, device = len(chosen), padded.device
    offset_y = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    offset_x = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    columns = torch.arange(width, device=device).expand(batch, width)
    if flip:
        flipped = torch.rand(batch, generator=generator, device=device) < 0.5
        columns = torch.where(flipped[:, None], width - 1 - columns, columns)
    rows = offset_y[:, None] + torch.arange(height, device=device)
    columns = offset_x[:, None] + columns
    return padded[chosen[:, None, None, None], torch.arange(channels, device=device)[None, :, None, None],
                  rows[:, None, :, None], columns[:, None, None, :]]


def cutout(images: Tensor, length: int, *, generator: torch.Generator) -> Tensor:
    """Zero one ``length``×``length`` square per image, centred uniformly, clipped at the border (DARTS)."""
    batch, _, height, width = images.shape
    device = images.device
    centre_y = torch.randint(0, height, (batch, 1), generator=generator, device=device)
    centre_x = torch.randint(0, width, (batch, 1), generator=generator, device=device)
    ys = torch.arange(height, device=device)
    xs = torch.arange(width, device=device)
    inside_y = (ys >= centre_y - length // 2) & (ys < centre_y + length // 2)
    inside_x = (xs >= centre_x - length // 2) & (xs < centre_x + length // 2)
    return images.masked_fill((inside_y[:, :, None] & inside_x[:, None, :])[:, None], 0.0)


def normalize(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 0–255 → float, per channel ``(x/255 − mean) / std``."""
    return (images.float() / 255.0 - mean) / std
