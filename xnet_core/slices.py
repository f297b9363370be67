"""Slice choices (docs/design.md, the CLI's ``--slices``): ``lesion|all|A:B|z,z,...``, 0-based axial RAS indices."""

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
                raise XNetError(f"the slice range {spec} starts after it ends ({start} > {stop}).", parameter="slices")
            chosen = list(range(start, stop + 1))
        else:
            chosen = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise XNetError(f"the slice choice {spec!r} is not lesion, all, A:B or z,z,... with whole numbers.",
                        parameter="slices") from None
    if not chosen:
        raise XNetError(f"the slice choice {spec!r} names no slice.", parameter="slices")
    outside = [z for z in chosen if not 0 <= z < n_slices]
    if outside:
        raise XNetError(f"slice {outside[0]} is outside 0..{n_slices - 1} of this scan.", parameter="slices")
    return chosen
