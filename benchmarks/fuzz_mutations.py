"""Hypothesis strategies that turn the fuzzer's valid seeds (``fuzz_cases``) into damaged cases.

Generic byte mutations (bit flips, truncation, inserted, deleted and overwritten bytes) apply to any
file; field-aware ones edit what the readers parse: NIfTI-1/2 header fields at their offsets (dims,
pixdim, datatype, bitpix, vox_offset, qform/sform codes, scl_slope/inter, the affine rows) set to
negative, zero, enormous, NaN or infinite values; gzip streams damaged after compression; DICOM tags
removed, given absurd values, re-typed (a wrong VR in the file) or given a wrong length, and series
whose geometry disagrees between slices; checkpoints with foreign payloads and cards; JSON sidecars
and caches whose values have the wrong type; the viewer's settings file with values of the wrong type,
NaN, enormous or negative, unknown names, Qt's typed values (``@Variant(...)``, ``@Size(...)``) where
text is expected, and damaged bytes.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import math
import struct
from functools import lru_cache

import nibabel as nib
import numpy as np
from hypothesis import strategies as st

from benchmarks.fuzz_cases import (
    CARD, MASK, NOTES, SCAN, SETTINGS, SETTINGS_SEED, WEIGHTS, Case, checkpoint_seed, explain_cache_files, gz,
    json_bytes, nifti_bytes, notes_payload, recovery_files, registration_cache_files, seed_weights, torch_bytes,
)

SPECIAL_FLOATS = [math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, 1e-30, 1e-7, 0.5, 1.0, 3.0, 1e6, 1e30, 3e38, 1e300]
SPECIAL_INTS = [-2**31, -32768, -1, 0, 1, 2, 3, 4, 5, 7, 8, 16, 255, 256, 348, 352, 540, 544, 32767, 65535,
                2**31 - 1, 2**32, 2**40, 2**62]
NIFTI_DATATYPES = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 3, 7, 255, -1]
ints = st.one_of(st.sampled_from(SPECIAL_INTS), st.integers(-10, 600))
floats = st.one_of(st.sampled_from(SPECIAL_FLOATS), st.floats(allow_nan=True, allow_infinity=True))


# -- bytes -----------------------------------------------------------------------------------------
@st.composite
def byte_mutation(draw, data: bytes, focus: int = 600) -> tuple[bytes, str]:
    """One generic mutation, positions biased to the first ``focus`` bytes (headers)."""
    buf = bytearray(data)
    n = len(buf)
    if n == 0:
        return bytes(draw(st.binary(max_size=64))), "replaced empty"
    pos = draw(st.one_of(st.integers(0, min(n, focus) - 1), st.integers(0, n - 1)))
    kind = draw(st.sampled_from(["flip", "flip", "truncate", "set", "insert", "delete", "append", "zero"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            at = draw(st.integers(max(0, pos - 64), min(n - 1, pos + 64)))
            buf[at] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        del buf[pos:]
    elif kind == "set":
        chunk = draw(st.binary(min_size=1, max_size=8))
        buf[pos:pos + len(chunk)] = chunk
    elif kind == "insert":
        buf[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    elif kind == "delete":
        del buf[pos:pos + draw(st.integers(1, 64))]
    elif kind == "append":
        buf += draw(st.binary(min_size=1, max_size=64))
    else:
        buf[pos:pos + draw(st.integers(1, 256))] = bytes(min(n - pos, 256))
    return bytes(buf), f"bytes {kind} at {pos}"


def _maybe_bytes(draw, data: bytes, probability: float = 0.3) -> tuple[bytes, list[str]]:
    if draw(st.floats(0, 1)) < probability:
        data, what = draw(byte_mutation(data))
        return data, [what]
    return data, []


# -- NIfTI -----------------------------------------------------------------------------------------
NIFTI_FIELDS = ["dim", "dim", "dim", "pixdim", "pixdim", "datatype", "bitpix", "vox_offset", "scl_slope",
                "scl_inter", "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d", "qoffset_x",
                "srow_x", "srow_y", "srow_z", "sizeof_hdr", "magic", "xyzt_units", "slice_code", "slice_start",
                "slice_end", "cal_max", "intent_code", "dim_info"]
MAGICS = [b"n+1\0", b"ni1\0", b"n+2\0\r\n\x1a\n", b"xxxx", b"\0\0\0\0"]


@st.composite
def nifti_field_edit(draw, raw: bytearray, version: int) -> str:
    """Set one header field of a NIfTI-``version`` image in place; returns what was done."""
    dtype = nib.nifti1.header_dtype if version == 1 else nib.nifti2.header_dtype
    name = draw(st.sampled_from(NIFTI_FIELDS))
    ftype, offset = dtype.fields[name][:2]
    base = ftype.base
    index = draw(st.integers(0, ftype.shape[0] - 1)) if ftype.shape else 0
    offset += index * base.itemsize
    if name == "magic":
        value = draw(st.sampled_from(MAGICS))[: base.itemsize].ljust(base.itemsize, b"\0")
        raw[offset:offset + base.itemsize] = value
        return f"{name}={value!r}"
    if name == "datatype":
        value = draw(st.sampled_from(NIFTI_DATATYPES))
    elif name == "vox_offset":
        value = draw(st.one_of(st.sampled_from([0, 1, 347, 348, 352, 353, 540, 544, len(raw), len(raw) + 1,
                                                -1, 2**31, math.nan, math.inf]), st.integers(0, len(raw))))
    elif base.kind in "iu":
        value = draw(ints)
    else:
        value = draw(floats)
    if base.kind in "iu":
        info = np.iinfo(base)
        value = int(min(max(int(value) if not (isinstance(value, float) and not math.isfinite(value)) else 0,
                            info.min), info.max))
    with np.errstate(all="ignore"):
        encoded = np.array(value).astype(base.newbyteorder("<")).tobytes()
    raw[offset:offset + base.itemsize] = encoded
    return f"{name}[{index}]={value!r}"


@lru_cache(maxsize=2)
def gzip_bomb(version: int) -> bytes:
    """The small seed image followed by 200 MB of zeros: 200 kB compressed."""
    return gzip.compress(nifti_bytes(version) + bytes(200 * 1024**2), compresslevel=9, mtime=0)


@st.composite
def nifti_case(draw) -> Case:
    version = draw(st.sampled_from([1, 1, 2]))
    if draw(st.integers(0, 199)) == 137:  # 1 in 200 (not 0: hypothesis favours the ends of a range)
        return Case("nifti", {SCAN + ".gz": gzip_bomb(version)}, [f"nifti{version} gzip bomb (200 MB of zeros after)"])
    four_d = draw(st.booleans())
    dtype = draw(st.sampled_from([np.int16, np.int16, np.float32, np.uint8, np.float64]))
    raw = bytearray(nifti_bytes(version, four_d, dtype))
    what = [f"nifti{version} {'4D' if four_d else '3D'} {np.dtype(dtype).name}"]
    for _ in range(draw(st.integers(0, 3))):
        what.append(draw(nifti_field_edit(raw, version)))
    data, more = _maybe_bytes(draw, bytes(raw), 0.25 if len(what) > 1 else 1.0)
    what += more
    if draw(st.booleans()):
        data = gz(data)
        what.append("gzip")
        if draw(st.floats(0, 1)) < 0.4:  # damage the compressed stream itself
            data, stream = draw(gzip_damage(data))
            what.append(stream)
        return Case("nifti", {SCAN + ".gz": data}, what)
    return Case("nifti", {SCAN: data}, what)


@st.composite
def gzip_damage(draw, data: bytes) -> tuple[bytes, str]:
    kind = draw(st.sampled_from(["bytes", "crc", "isize", "second member", "trailing garbage", "no trailer"]))
    if kind == "bytes":
        return draw(byte_mutation(data, focus=len(data)))
    if kind in ("crc", "isize"):
        at = len(data) - (8 if kind == "crc" else 4)
        return data[:at] + struct.pack("<I", draw(st.integers(0, 2**32 - 1))) + data[at + 4:], kind
    if kind == "second member":
        return data + gz(draw(st.binary(max_size=400))), kind
    if kind == "trailing garbage":
        return data + draw(st.binary(min_size=1, max_size=32)), kind
    return data[:-8], kind


# -- DICOM -----------------------------------------------------------------------------------------
def dicom_datasets(n: int = 4, rows: int = 6, cols: int = 8):
    """A complete axial MR series (LPS), ``n`` slices of ``rows`` x ``cols``, as pydicom datasets."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

    pixels = np.clip(np.random.default_rng(1).normal(500, 120, (n, rows, cols)), 0, 4000).astype("<u2")
    out = []
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID = MRImageStorage, ExplicitVRLittleEndian
        meta.MediaStorageSOPInstanceUID = f"1.2.3.4.{k + 1}"
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.StudyDate, ds.SeriesDate = "Fuzz^Case", "F1", "20240501", "20240501"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = "1.2.3", "1.2.3.1", "1.2.3.2"
        ds.Modality, ds.SeriesNumber, ds.SeriesDescription, ds.ProtocolName = "MR", 3, "t1_axial", "t1"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-40.0, -30.0, 10.0 + 2.5 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness, ds.SpacingBetweenSlices = [0.9, 1.1], 2.5, 2.5
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = pixels[k].tobytes()
        out.append(ds)
    return out


REQUIRED_TAGS = ["Rows", "Columns", "PixelData", "ImagePositionPatient", "ImageOrientationPatient",
                 "PixelSpacing", "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel",
                 "SeriesInstanceUID", "PhotometricInterpretation", "HighBit", "SOPClassUID", "InstanceNumber"]
BAD_VALUES = {
    "ImagePositionPatient": [["nan", "0", "0"], ["1", "2"], ["1e308", "1e308", "1e308"], ["inf", "0", "0"],
                             ["1", "2", "3", "4"], []],
    "ImageOrientationPatient": [[1, 0, 0, 1, 0, 0], [0] * 6, [1, 0, 0], ["nan"] * 6, [1, 0, 0, 0, 1, 0, 0],
                                [1e308, 0, 0, 0, 1e308, 0], [1, 0, 0, 0, 0, 1]],
    "PixelSpacing": [[0, 0], [-1, 1], ["nan", 1], [1], [1e308, 1e308], ["inf", "inf"], [1, 2, 3]],
    "SliceThickness": ["0", "-1", "nan", "inf", "1e308"], "SpacingBetweenSlices": ["0", "-2.5", "nan"],
    "RescaleSlope": ["nan", "inf", "0", "1e38", "-1e38", "1e308"], "RescaleIntercept": ["nan", "-inf", "1e308"],
    "NumberOfFrames": ["0", "2", "-1", "99999"], "SamplesPerPixel": [0, 3, 65535],
    "SeriesNumber": ["-1", "99999999999", "1.5"], "InstanceNumber": ["-5", "99999999999", ""],
    "Rows": [0, 1, 65535], "Columns": [0, 1, 65535], "BitsAllocated": [0, 1, 7, 8, 12, 32, 64],
    "BitsStored": [0, 17, 64], "HighBit": [0, 40], "PixelRepresentation": [1, 2, 65535],
    "PhotometricInterpretation": ["RGB", "PALETTE COLOR", "YBR_FULL", ""],
    "SeriesDate": ["abc", "99999999", ""], "SeriesInstanceUID": ["", "1.2.3.9"],
}
GEOMETRY_EDITS = ["duplicate position", "one slice shifted", "one slice far away", "one slice sideways",
                  "one orientation differs", "one size differs", "one spacing differs", "all at one position",
                  "one echo extra", "reversed normal on one"]


def _geometry_edit(datasets, kind: str, k: int) -> None:
    ds = datasets[k]
    ipp = [float(v) for v in ds.ImagePositionPatient]
    if kind == "duplicate position":
        ds.ImagePositionPatient = list(datasets[(k + 1) % len(datasets)].ImagePositionPatient)
    elif kind == "one slice shifted":
        ds.ImagePositionPatient = [ipp[0], ipp[1], ipp[2] + 1.1]
    elif kind == "one slice far away":
        ds.ImagePositionPatient = [ipp[0], ipp[1], ipp[2] + 1e6]
    elif kind == "one slice sideways":
        ds.ImagePositionPatient = [ipp[0] + 30, ipp[1], ipp[2]]
    elif kind == "one orientation differs":
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    elif kind == "one size differs":
        ds.Rows = int(ds.Rows) + 1
    elif kind == "one spacing differs":
        ds.PixelSpacing = [0.5, 0.5]
    elif kind == "all at one position":
        for other in datasets:
            other.ImagePositionPatient = ipp
    elif kind == "one echo extra":
        extra = copy.deepcopy(ds)
        extra.SOPInstanceUID = extra.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.99"
        datasets.append(extra)
    else:
        ds.ImageOrientationPatient = [-1, 0, 0, 0, 1, 0]


def _encode(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


VRS = [b"US", b"SS", b"UL", b"DS", b"IS", b"CS", b"LO", b"UI", b"OB", b"OW", b"SQ", b"UN", b"FD", b"AT", b"ZZ"]
TAG_BYTES = {"Rows": (0x0028, 0x0010), "Columns": (0x0028, 0x0011), "BitsAllocated": (0x0028, 0x0100),
             "PixelSpacing": (0x0028, 0x0030), "ImagePositionPatient": (0x0020, 0x0032),
             "ImageOrientationPatient": (0x0020, 0x0037), "SeriesNumber": (0x0020, 0x0011),
             "PixelData": (0x7FE0, 0x0010), "RescaleSlope": (0x0028, 0x1053), "SeriesInstanceUID": (0x0020, 0x000E),
             "SamplesPerPixel": (0x0028, 0x0002), "InstanceNumber": (0x0020, 0x0013)}


@st.composite
def raw_tag_edit(draw, data: bytes) -> tuple[bytes, str]:
    """A tag given another VR, or a wrong length, in the encoded file (what no writer API allows)."""
    keyword = draw(st.sampled_from(sorted(TAG_BYTES)))
    group, element = TAG_BYTES[keyword]
    at = data.find(struct.pack("<HH", group, element), 132)
    if at < 0:
        return data, f"{keyword} absent"
    buf = bytearray(data)
    if draw(st.booleans()):
        vr = draw(st.sampled_from(VRS))
        buf[at + 4:at + 6] = vr
        return bytes(buf), f"{keyword} VR -> {vr.decode()}"
    long_vr = bytes(buf[at + 4:at + 6]) in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC", b"UR")
    if long_vr:
        length = draw(st.sampled_from([0, 1, 3, 2**31, 0xFFFFFFFF, 0xFFFFFFFE]))
        buf[at + 8:at + 12] = struct.pack("<I", length)
    else:
        length = draw(st.sampled_from([0, 1, 3, 5, 0xFFFF, 0xFFFE]))
        buf[at + 6:at + 8] = struct.pack("<H", length)
    return bytes(buf), f"{keyword} length -> {length}"


@st.composite
def dicom_case(draw) -> Case:
    from pydicom.dataelem import DataElement
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    datasets = dicom_datasets()
    what = ["dicom series of 4"]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["delete", "value", "value", "geometry"]))
        every = draw(st.booleans())
        targets = datasets if every else [datasets[draw(st.integers(0, len(datasets) - 1))]]
        if kind == "delete":
            keyword = draw(st.sampled_from(REQUIRED_TAGS))
            for ds in targets:
                if keyword == "SOPClassUID":
                    ds.file_meta.MediaStorageSOPClassUID = "1.2.3.4.5"
                if keyword in ds:
                    delattr(ds, keyword)
            what.append(f"{'all' if every else 'one'}: no {keyword}")
        elif kind == "value":
            keyword = draw(st.sampled_from(sorted(BAD_VALUES)))
            value = draw(st.sampled_from(BAD_VALUES[keyword]))
            tag = tag_for_keyword(keyword)
            for ds in targets:
                ds[tag] = DataElement(tag, dictionary_VR(tag), value)
            what.append(f"{'all' if every else 'one'}: {keyword}={value!r}")
        else:
            edit = draw(st.sampled_from(GEOMETRY_EDITS))
            try:
                _geometry_edit(datasets, edit, draw(st.integers(0, 3)))
                what.append(edit)
            except (AttributeError, ValueError, TypeError, KeyError, IndexError):  # an earlier edit spoilt the tag
                what.append(f"{edit} skipped")
    files = {}
    for k, ds in enumerate(datasets):
        try:
            files[f"series/im{k:02d}.dcm"] = _encode(ds)
        except Exception as error:  # noqa: BLE001 - pydicom refuses to encode some values: skip that edit
            what.append(f"im{k} not encodable ({type(error).__name__})")
            files[f"series/im{k:02d}.dcm"] = _encode(dicom_datasets()[min(k, 3)])
    name = draw(st.sampled_from(sorted(files)))
    if draw(st.floats(0, 1)) < 0.35:
        files[name], edit = draw(raw_tag_edit(files[name]))
        what.append(f"{name}: {edit}")
    if draw(st.floats(0, 1)) < 0.25:
        files[name], edit = draw(byte_mutation(files[name], focus=len(files[name])))
        what.append(f"{name}: {edit}")
    return Case("dicom", files, what)


# -- JSON values -----------------------------------------------------------------------------------
json_leaf = st.one_of(st.none(), st.booleans(), ints, floats, st.text(max_size=12),
                      st.sampled_from(["", "robust", "nan", "1e999", "../../etc", "\x00", "é" * 3]))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                              st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                          max_leaves=8)


@st.composite
def json_edit(draw, payload: object) -> tuple[object, str]:
    """Replace the whole payload, or one value at a path inside it, with a value of any type."""
    if draw(st.floats(0, 1)) < 0.15 or not isinstance(payload, (dict, list)) or not payload:
        return draw(json_value), "payload replaced"
    payload = copy.deepcopy(payload)
    node, path = payload, []
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = draw(st.sampled_from(keys))
        path.append(key)
        child = node[key]
        if isinstance(child, (dict, list)) and child and draw(st.booleans()):
            node = child
            continue
        if draw(st.floats(0, 1)) < 0.2:
            del node[key]
            return payload, f"deleted {path}"
        node[key] = draw(json_value)
        return payload, f"{path} = {node[key]!r}"[:200]


def deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@st.composite
def json_file(draw, payload: object) -> tuple[bytes, list[str]]:
    what = []
    for _ in range(draw(st.integers(0, 3))):
        payload, edit = draw(json_edit(payload))
        what.append(edit)
    choice = draw(st.floats(0, 1))
    if choice < 0.04:
        return deep_json(draw(st.sampled_from([1000, 100_000]))), ["deeply nested JSON"]
    if choice < 0.08:
        return b'{"study": "' + draw(st.binary(max_size=8)) + b'\xff\xfe"}', ["invalid UTF-8"]
    data = json_bytes(payload)
    data, more = _maybe_bytes(draw, data, 0.3 if what else 1.0)
    return data, what + more


# -- checkpoints, sidecars and caches --------------------------------------------------------------
@st.composite
def checkpoint_case(draw) -> Case:
    import torch

    state, card = checkpoint_seed()
    state = dict(state)
    what = []
    kind = draw(st.sampled_from(["none", "bytes", "state", "state", "wrapped", "card", "card", "card"]))
    if kind == "state":
        key = draw(st.sampled_from(sorted(state)))
        edit = draw(st.sampled_from(["drop", "extra", "shape", "nan", "int", "list", "scalar", "empty"]))
        if edit == "drop":
            del state[key]
        elif edit == "extra":
            state["extra.weight"] = torch.zeros(2)
        elif edit == "shape":
            state[key] = torch.zeros(state[key].numel() + 1)
        elif edit == "nan":
            state[key] = torch.full_like(state[key].float(), math.nan)
        elif edit == "int":
            state[key] = state[key].to(torch.int64)
        elif edit == "list":
            state[key] = [1.0, 2.0]
        elif edit == "scalar":
            state[key] = 3
        else:
            state = {}
        what.append(f"state {edit} {key}")
    payload: object = state
    if kind == "wrapped":
        embedded, edit = draw(json_edit(card))
        payload = {"state_dict": state, "card": embedded}
        what.append(f"wrapped with card {edit}")
    weights = seed_weights() if payload is state and not what else torch_bytes(payload)
    if kind == "bytes":
        weights, edit = draw(byte_mutation(weights, focus=len(weights)))
        what.append(edit)
    files = {WEIGHTS: weights}
    if kind == "card":
        files[CARD], edits = draw(json_file(card))
        what += edits
    elif draw(st.booleans()):
        files[CARD] = json_bytes(card)
    return Case("checkpoint", files, what or ["valid"])


def _mask_files() -> dict[str, bytes]:
    return {MASK: gz(nifti_bytes(mask=True, dtype=np.uint8))}


@st.composite
def mask_case(draw) -> Case:
    raw = bytearray(nifti_bytes(mask=True, dtype=draw(st.sampled_from([np.uint8, np.int16, np.float32]))))
    what = ["mask"]
    for _ in range(draw(st.integers(0, 2))):
        what.append(draw(nifti_field_edit(raw, 1)))
    data, more = _maybe_bytes(draw, bytes(raw), 0.3 if len(what) > 1 else 1.0)
    return Case("mask", {MASK: gz(data)}, what + more)


@st.composite
def notes_case(draw) -> Case:
    files = _mask_files()
    files[NOTES], what = draw(json_file(notes_payload()))
    return Case("notes", files, what)


@st.composite
def recovery_case(draw) -> Case:
    files = recovery_files()
    names = sorted(files)
    if draw(st.booleans()):
        meta_name = [n for n in names if n.endswith(".json")][0]
        files[meta_name], what = draw(json_file(json.loads(files[meta_name])))
    else:
        mask_name = [n for n in names if n.endswith(".nii.gz")][0]
        files[mask_name], edit = draw(byte_mutation(files[mask_name], focus=len(files[mask_name])))
        what = [edit]
    return Case("recovery", files, what)


@st.composite
def cache_case(draw, target: str) -> Case:
    files = registration_cache_files() if target == "transform" else explain_cache_files()
    name = draw(st.sampled_from(sorted(files)))
    if name.endswith(".json"):
        files[name], what = draw(json_file(json.loads(files[name])))
    else:
        files[name], edit = draw(byte_mutation(files[name], focus=len(files[name])))
        what = [f"{name.rsplit('/', 1)[-1]}: {edit}"]
    return Case(target, files, what)


# -- the viewer's settings ---------------------------------------------------------------------------
SETTINGS_KEYS = ["brush_radius", "colour_map", "heatmap_opacity", "mask_opacity", "radiological", "recent_files",
                 "pacs/host", "pacs/port", "pacs/called_aet", "pacs/calling_aet", "pacs/timeout_s", "pacs/tls",
                 "pacs/receive_port", "pacs/tls_cert_file", "pacs/tls_key_file"]
# Values as they appear in the INI file; Qt parses @Type(...) into typed values (QDataStream bytes in
# @Variant: a 4-byte type id, then the value: 2 int, 6 double, 1 bool, 127 a user type by name).
SETTINGS_VALUES = [
    "nan", "-nan", "inf", "-inf", "1e400", "-1", "-40", "0", "41", "1e308", "2.5", "3.0", "99999999999999999999999",
    "abc", "", " ", "true", "false", "maybe", "Inferno", "rainbow", "viridis", "a, b, c", '"1, 2"', "\\0", "\\x1",
    "@Invalid()", "@ByteArray(\\xff\\0)", "@Size(1 2)", "@Rect(1 2 3 4)", "@Point(-1 2)", "@DateTime(\\0\\0\\0\\x10\\0)",
    "@Variant(garbage", "@Variant(\\0\\0\\0\\x2\\0\\0\\0\\x5)", "@Variant(\\0\\0\\0\\x2\\xff\\xff\\xff\\xfb)",
    "@Variant(\\0\\0\\0\\x6\\x7f\\xf8\\0\\0\\0\\0\\0\\0)", "@Variant(\\0\\0\\0\\x6\\x7f\\xf0\\0\\0\\0\\0\\0\\0)",
    "@Variant(\\0\\0\\0\\x1\\x1)", "@Variant(\\0\\0\\0\\x7f\\0\\0\\0\\x5zzzzz\\0\\0\\0\\0\\x3)", "x" * 5000,
]


def _variant_bytes(data: bytes) -> str:
    return "@Variant(" + "".join(f"\\x{b:x}" for b in data) + ")"


settings_value = st.one_of(st.sampled_from(SETTINGS_VALUES), st.text(max_size=24), floats.map(repr), ints.map(str),
                           st.binary(max_size=24).map(_variant_bytes))


def _set_ini(lines: list[str], key: str, value: str | None) -> list[str]:
    """``key`` ("section/name"; General when no section) set to ``value`` (None: its line removed)."""
    section, _, name = key.rpartition("/")
    header = f"[{section or 'General'}]"
    start = lines.index(header) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
    at = next((i for i in range(start, end) if lines[i].split("=", 1)[0] == name), None)
    if value is None:
        return [line for i, line in enumerate(lines) if i != at]
    if at is None:
        return lines[:end] + [f"{name}={value}"] + lines[end:]
    return lines[:at] + [f"{name}={value}"] + lines[at + 1:]


@st.composite
def settings_case(draw) -> Case:
    lines, what = SETTINGS_SEED.splitlines(), []
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from(SETTINGS_KEYS))
        value = None if draw(st.floats(0, 1)) < 0.1 else draw(settings_value)
        lines = _set_ini(lines, key, value)
        what.append(f"{key} removed" if value is None else f"{key}={value[:60]!r}")
    data, more = _maybe_bytes(draw, "\n".join(lines).encode("utf-8", "replace"), 0.2)
    return Case("settings", {SETTINGS: data}, what + more)


WEIGHTS_BY_TARGET = {"nifti": 40, "dicom": 22, "mask": 6, "notes": 6, "checkpoint": 10, "recovery": 5,
                     "transform": 6, "explain_cache": 5, "settings": 5}


def any_case(targets: list[str] | None = None) -> st.SearchStrategy[Case]:
    """One case of any target (or of ``targets``), weighted towards the scan readers."""
    strategies = {"nifti": nifti_case(), "dicom": dicom_case(), "mask": mask_case(), "notes": notes_case(),
                  "checkpoint": checkpoint_case(), "recovery": recovery_case(),
                  "transform": cache_case("transform"), "explain_cache": cache_case("explain_cache"),
                  "settings": settings_case()}
    chosen = targets or list(strategies)
    pool = [name for name in chosen for _ in range(WEIGHTS_BY_TARGET[name])]
    return st.sampled_from(pool).flatmap(lambda name: strategies[name])
