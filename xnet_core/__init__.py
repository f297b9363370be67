"""X-Net Viewer core: volumes, preprocessing, the X-Net model and slice-by-slice inference.

Plain Python and PyTorch; never imports Qt.
"""

__version__ = "0.1.0"

DISCLAIMER = (
    "Research and second-opinion use only. Not a diagnostic device; "
    "not validated for clinical use."
)

# The compute devices ``inference.choose_device`` accepts; here, without torch, so that a parser can offer them.
DEVICES = ("auto", "cuda", "mps", "cpu")

# What the lesion table and the report list as a finding (ml); here, without numpy, for parsers and the viewer.
DEFAULT_MIN_LESION_ML = 0.1
