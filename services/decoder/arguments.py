"""The decoder's argument rules: the documented ranges (docs/decoder.md) and FIT's bands.

Kept apart from the commands so the table a person reads in the docs has one place in the code.
"""

from __future__ import annotations

from services.decoder.features import DEFAULT_BANDS
from shared_utils.checks import Range, check_ranges, short
from shared_utils.errors import CommandError

#: The documented range of every numeric argument (docs/decoder.md).
RANGES = {
    "window_s": Range(0.05, 60, "s"),
    "epoch_step_s": Range(0.01, 60, "s"),
    "tmin_s": Range(0, 60, "s"),
    "order": Range(1, 8),
    "folds": Range(2, 20),
    "shrinkage": Range(0, 1),
    "step_s": Range(0, 10, "s"),
    "on_threshold": Range(0, 1),
    "off_threshold": Range(0, 1),
    "smoothing_s": Range(0, 3600, "s"),
    "min_dwell_s": Range(0, 3600, "s"),
    "resolve_timeout_s": Range(0, 60, "s"),
    "band_hz": Range(0, 100_000, "Hz", open_lo=True),
}
MAX_BANDS = 16
MAX_NAMES = 4096  # classes or channels named in FIT
XDF_SUFFIXES = (".xdf", ".xdfz")
MODEL_SUFFIXES = (".json",)


def parse_bands(bands: list | None) -> list[list[float]]:
    """FIT's ``bands``: at most ``MAX_BANDS`` pairs ``[low_hz, high_hz]`` with low < high."""
    if bands is None:
        return [[float(a), float(b)] for a, b in DEFAULT_BANDS]
    shape = f"bands must be a list of [low_hz, high_hz] pairs, got {short(bands)}"
    if not bands or len(bands) > MAX_BANDS:
        raise CommandError(f"{shape} (1 to {MAX_BANDS} pairs)")
    out = []
    for pair in bands:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise CommandError(shape)
        check_ranges({"bands": RANGES["band_hz"]}, bands=pair[0])
        check_ranges({"bands": RANGES["band_hz"]}, bands=pair[1])
        if not pair[0] < pair[1]:
            raise CommandError(f"bands: {short(pair)} must have low_hz < high_hz")
        out.append([float(pair[0]), float(pair[1])])
    return out
