"""`medmem phantoms`: deterministic embedded datasets written in the real file formats.

BraTS: subject folders of NIfTI volumes (`.nii` as in the 2020 release, `.nii.gz` as in 2021).
Chest x-ray: JPEGs in the Kermany layout ({train,test,val}/{NORMAL,PNEUMONIA}/) and DICOM
radiographs in the RSNA layout (stage_2_train_images/*.dcm with stage_2_train_labels.csv), with
MONOCHROME1 and MONOCHROME2, 12-16 bit, rescale and windowing, and obviously fake patient data.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from medmem.data.phantom_brain import brain_subject, subject_name, write_brain_subject
from medmem.data.phantom_cxr import chest_radiograph
from medmem.io import temporary_path
from medmem.parallel import ordered_map

log = logging.getLogger(__name__)

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def _subject_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def _staged(output_dir: Path):
    """Build into a temporary sibling folder; the caller renames it when complete."""
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise FileExistsError(f"{output_dir}: output folder exists and is not empty")
    staging = temporary_path(output_dir)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def _finish(staging: Path, output_dir: Path) -> None:
    output_dir = Path(output_dir)
    if output_dir.exists():
        output_dir.rmdir()
    staging.rename(output_dir)


def _brain_job(args):
    seed, index, shape, release, folder = args
    name = subject_name(release, index + 1)
    volumes = brain_subject(_subject_rng(seed, index), shape)
    write_brain_subject(volumes, Path(folder) / name, name, gz=(release != 2020))
    return name


def make_brats_phantoms(output_dir, n_subjects: int, seed: int, shape=(240, 240, 155),
                        release: int = 2021, workers: int = 1) -> list[str]:
    """Write `n_subjects` BraTS-like subject folders (`brain_subject` at `shape` voxels) into
    `output_dir`; returns their names (`subject_name`). release 2020: `.nii` files, else `.nii.gz`.

    Deterministic for a `seed` (subject i draws from `default_rng([seed, i])`, whatever `workers`).
    Built in a temporary sibling folder and renamed when complete. Raises FileExistsError when
    `output_dir` exists and is not empty; InputError without nilearn.
    """
    staging = _staged(output_dir)
    try:
        jobs = [(seed, i, tuple(shape), release, str(staging)) for i in range(n_subjects)]
        names = list(tqdm(ordered_map(_brain_job, jobs, workers), total=n_subjects, unit="subject",
                          desc="brain phantoms"))
        _finish(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return names


def _fake_identity(rng, index: int) -> dict:
    first = ["Alice", "Bruno", "Chloe", "Dmitri", "Esra", "Farid", "Greta", "Hugo"][index % 8]
    return {
        "PatientName": f"PHANTOM^{first}^Fake{index:04d}",
        "PatientID": f"FAKE-{rng.integers(10**7, 10**8)}",
        "PatientBirthDate": f"19{rng.integers(20, 99):02d}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}",
        "PatientSex": "MF"[index % 2],
    }


def _write_dicom(path: Path, image: np.ndarray, identity: dict, rng, seed: int, index: int) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    bits = int(rng.choice([12, 14, 16]))
    monochrome1 = bool(rng.random() < 0.5)
    slope, intercept = (1.0, 0.0) if rng.random() < 0.5 else (float(rng.choice([0.5, 2.0])), -1024.0)
    displayed = 1.0 - image if monochrome1 else image  # stored so that the presentation is `image`
    stored = np.round(displayed * (2**bits - 1)).astype(np.uint16)

    uid = lambda kind: generate_uid(entropy_srcs=[str(seed), str(index), kind])  # noqa: E731
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = uid("sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    for key, value in identity.items():
        setattr(ds, key, value)
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid("series")
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", "PA"
    ds.InstitutionName = "Phantom General Hospital (fake)"
    ds.StudyDate = ds.ContentDate = "20240101"
    ds.PatientAge = f"{int(rng.integers(1, 90)):03d}Y"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelSpacing = [0.143, 0.143]
    if rng.random() < 0.7 or slope != 1.0:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "US"
    if rng.random() < 0.6:  # a window over the central part of the range
        lo, hi = np.percentile(stored, [1, 99.5]) * slope + intercept
        ds.WindowCenter, ds.WindowWidth = round(float(lo + hi) / 2, 1), round(float(hi - lo), 1)
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)


def _cxr_job(args):
    seed, index, height, folder = args
    rng = _subject_rng(seed, index)
    folder = Path(folder)
    pneumonia = bool(rng.random() < 0.65)
    as_dicom = index % 3 == 2
    n_images = 1 + int(rng.random() < 0.35) + int(rng.random() < 0.15)
    written = []
    if as_dicom:
        identity = _fake_identity(rng, index)
        patient_uuid = str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | int(rng.integers(0, 2**63))))
        for k in range(n_images):
            width = int(height * rng.uniform(0.95, 1.25))
            image = chest_radiograph(rng, height, width, pneumonia)
            name = patient_uuid if k == 0 else f"{patient_uuid}-{k}"
            path = folder / "rsna" / "stage_2_train_images" / f"{name}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_dicom(path, image, identity, rng, seed, index * 10 + k)
            written.append({"patientId": identity["PatientID"], "file": path.name, "Target": int(pneumonia)})
    else:
        split = ["train", "train", "train", "train", "test", "val"][index % 6]
        label = "PNEUMONIA" if pneumonia else "NORMAL"
        kind = "bacteria" if rng.random() < 0.6 else "virus"
        for k in range(n_images):
            width = int(height * rng.uniform(1.05, 1.5))
            image = chest_radiograph(rng, height, width, pneumonia)
            name = (f"person{index + 1}_{kind}_{k + 1}.jpeg" if pneumonia
                    else f"IM-{index + 1:04d}-{k + 1:04d}.jpeg")
            path = folder / "kermany" / split / label / name
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = np.round(image * 255).astype(np.uint8)
            picture = Image.fromarray(pixels, "L")
            if index % 5 == 4:  # some Kermany files are stored as RGB
                picture = picture.convert("RGB")
            picture.save(path, quality=92)
    return written


def make_cxr_phantoms(output_dir, n_subjects: int, seed: int, height: int = 512,
                      workers: int = 1) -> None:
    """Write `n_subjects` chest x-ray phantom patients into `output_dir`: two in three as Kermany
    JPEGs (`kermany/{train,test,val}/{NORMAL,PNEUMONIA}/`), every third as RSNA DICOM
    (`rsna/stage_2_train_images/*.dcm`, 12-16 bit, MONOCHROME1/2, fake identities, with
    `stage_2_train_labels.csv`), 1-3 images each, `height` pixels high (width 0.95-1.5 × height).

    Deterministic for a `seed` (patient i draws from `default_rng([seed, i])`, whatever `workers`).
    Built in a temporary sibling folder and renamed when complete. Raises FileExistsError when
    `output_dir` exists and is not empty.
    """
    staging = _staged(output_dir)
    try:
        jobs = [(seed, i, height, str(staging)) for i in range(n_subjects)]
        labels = [row for rows in tqdm(ordered_map(_cxr_job, jobs, workers), total=n_subjects,
                                       unit="patient", desc="chest x-ray phantoms") for row in rows]
        if labels:  # RSNA's label file: one row per box (none for normal images)
            table = pd.DataFrame(labels)
            table = table.assign(patientId=table["file"].str.removesuffix(".dcm"), x=np.nan, y=np.nan,
                                 width=np.nan, height=np.nan)
            table[["patientId", "x", "y", "width", "height", "Target"]].to_csv(
                staging / "rsna" / "stage_2_train_labels.csv", index=False)
        _finish(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
