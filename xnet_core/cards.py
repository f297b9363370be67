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
    """The intensity normalisation recipe a card names (``robust`` when it names none)."""
    return str(card.get("normalisation", {}).get("recipe", "robust"))


def read_sidecar_card(weights: str | os.PathLike | None) -> dict[str, Any]:
    """The card next to ``weights``, or {} when there is none or it does not parse (loading the
    weights later reports that properly)."""
    if weights is None:
        return {}
    try:
        return json.loads(card_path_for(weights).read_text())
    except (OSError, ValueError):
        return {}
