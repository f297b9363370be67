"""Model cards: where a weights file's card lives and what it says, without torch.

The viewer reads the card before the model loads (the scan shows first); ``checkpoint`` reads and
validates it when it loads the weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def card_path_for(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name.removesuffix(".pt").removesuffix(".pth") + ".card.json")


def card_normalisation(card: dict[str, Any]) -> str:
    """The intensity normalisation recipe a card names (``robust`` when it names none).

    A ``normalisation`` that is not an object comes back as its text, which no recipe matches, so
    that loading the weights refuses the card instead of guessing.
    """
    normalisation = card.get("normalisation", {})
    if not isinstance(normalisation, dict):
        return str(normalisation)
    return str(normalisation.get("recipe", "robust"))


def read_sidecar_card(weights: str | os.PathLike | None) -> dict[str, Any]:
    """The card next to ``weights``, or {} when there is none, it does not parse or it holds no JSON
    object (loading the weights later reports that properly)."""
    if weights is None:
        return {}
    try:
        card = json.loads(card_path_for(weights).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python's stack
        return {}
    return card if isinstance(card, dict) else {}
