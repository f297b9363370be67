"""The ``--slices`` option (DESIGN.md): ``lesion|all|A:B|z,z,...``, 0-based axial RAS indices."""

from __future__ import annotations

from xnet_core.errors import XNetError

LESION = "lesion"


def parse_slices(spec: str, n_slices: int) -> list[int] | str:
    """A sorted list of slice indices, or ``"lesion"`` (the caller resolves it after segmenting).

    ``A:B`` is inclusive. Indices outside ``0..n_slices-1`` are an error, not silently dropped.
    """
    text = spec.strip().lower()
    if text == LESION:
        return LESION
    if text == "all":
        return list(range(n_slices))
    try:
        if ":" in text:
            start_text, stop_text = text.split(":", 1)
            start, stop = int(start_text), int(stop_text)
            if start > stop:
                raise XNetError(f"--slices {spec}: the start {start} is after the end {stop}.")
            chosen = list(range(start, stop + 1))
        else:
            chosen = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise XNetError(f"--slices {spec}: expected lesion, all, A:B or z,z,... with whole numbers.") from None
    if not chosen:
        raise XNetError(f"--slices {spec}: no slice given.")
    outside = [z for z in chosen if not 0 <= z < n_slices]
    if outside:
        raise XNetError(f"--slices {spec}: slice {outside[0]} is outside 0..{n_slices - 1} of this scan.")
    return chosen
