"""The shipped model's card on real anatomy: its backgrounds by person, its figures and the status they set."""

from __future__ import annotations

import json

import pytest

from xnet_core.training.release import (RealAnatomyTargets, background_sources, real_anatomy_figures,
                                        release_status, unmet_targets, without_name_lists)


def _reports(sha: str = "abc", fp=(0.4, 1.9), components=(6.5, 19), pasted=0.72, template=0.71):
    negatives = {"checkpoint_sha256": sha, "negatives": {
        "n": 14, "registration_qc_failed": ["ixi2mm_IXI072_68M"],
        "false_positive_ml": {"median": fp[0], "max": fp[1]}, "components": {"median": components[0], "max": components[1]},
        "findings": {"median": 1.0, "max": 5, "min_lesion_ml": 0.1}}}
    return (negatives, {"checkpoint_sha256": sha, "dice": pasted, "n": 18},
            {"checkpoint_sha256": sha, "dice": template, "n": 20})


def test_backgrounds_are_listed_by_side_of_the_split_with_their_licences(tmp_path) -> None:
    index = [
        {"file": "ixi2mm_IXI167_67F", "source": "NiChart", "path": "a", "licence": "CC BY-SA 3.0"},
        {"file": "ixi2mm_IXI072_68M", "source": "NiChart", "path": "b", "licence": "CC BY-SA 3.0"},  # held out
        {"file": "ds2748_ctrl_sub52_32M", "source": "OpenNeuro", "path": "c", "licence": "CC0"},
        {"file": "chris_t1_niivue", "source": "niivue", "path": "d", "licence": "BSD-2-Clause"},  # not named
    ]
    (tmp_path / "index.json").write_text(json.dumps(index))
    description = ("cases pasted into 2 real brains (ds2748_ctrl_sub52_32M, ixi2mm_IXI167_67F); "
                   "validation pasted into 1 (ixi2mm_IXI072_68M)")
    record = background_sources(tmp_path, description)
    assert [e["file"] for e in record["training"]] == ["ixi2mm_IXI167_67F", "ds2748_ctrl_sub52_32M"]
    assert [e["file"] for e in record["validation"]] == ["ixi2mm_IXI072_68M"]
    assert record["licences"] == ["CC BY-SA 3.0", "CC0"] and "IXI" in record["attribution"]
    assert without_name_lists(description) == ("cases pasted into 2 real brains (named in the card's backgrounds); "
                                               "validation pasted into 1 (ixi2mm_IXI072_68M)")


def test_the_status_names_each_missed_target_and_only_those() -> None:
    figures = real_anatomy_figures(*_reports())
    assert figures["negatives_registration_qc_failed"] == ["ixi2mm_IXI072_68M"]
    assert unmet_targets(figures) == ["components_median"]
    status = release_status(figures)
    assert status == ("INTERIM, 1 of 5 real-anatomy targets missed: on held-out healthy brains false positives "
                      "median 0.40 ml, largest 1.90 ml, 6.5 components per scan (target ≤ 5), 1 of them 0.1 ml or "
                      "more; Dice 0.720 on lesions pasted into them; Dice 0.710 on template cases.")
    met = real_anatomy_figures(*_reports(components=(4, 9)))
    assert release_status(met).startswith("meets every real-anatomy target: on held-out healthy brains")
    worse = real_anatomy_figures(*_reports(fp=(0.6, 3.5), pasted=0.69, template=0.70))
    assert unmet_targets(worse) == ["fp_median_ml", "fp_max_ml", "components_median", "pasted_dice"]
    assert "median 0.60 ml (target ≤ 0.5 ml), largest 3.50 ml (target ≤ 3 ml)" in release_status(worse)
    assert "pasted into them (target ≥ 0.7); Dice 0.700 on template cases." in release_status(worse)
    assert unmet_targets(worse, RealAnatomyTargets(fp_median_ml=1, fp_max_ml=4, components_median=7,
                                                   pasted_dice=0.6)) == []


def test_figures_from_different_weights_are_refused() -> None:
    negatives, pasted, template = _reports()
    template["checkpoint_sha256"] = "other"
    with pytest.raises(ValueError, match="same weights file"):
        real_anatomy_figures(negatives, pasted, template)
