"""Model registry, preprocessing, batched inference and study findings."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

from models import bundled_models_root
from models.architectures import build
from resources.models import ModelRegistry
from screenlake.errors import ConfigurationError, ModelIntegrityError, UnreadableInstanceError
from screenlake.fsutil import sha256_of
from screenlake.inference.manifest import (
    ModelManifest,
    load_manifest,
    model_dir_for,
    parse_manifest,
)
from screenlake.inference.predict import (
    aggregate_study_scores,
    predict_instances,
    run_predictions,
    study_findings,
)
from screenlake.inference.preprocess import instance_tensor, window
from screenlake.inference.registry import (
    LoadedModel,
    load_model,
    resolve_device,
)
from screenlake.synth.images import chest_radiograph, ct_stored_values, ct_volume
from screenlake.tables import INSTANCE_PREDICTIONS, STUDY_FINDINGS, conform

MODELS = bundled_models_root()
# The partition key column is being renamed (partition_date -> batch_id); fill whichever the
# schema has, so that these tests follow the schema rather than pin one spelling.
_PARTITION_VALUES: dict[str, Any] = {"partition_date": date(2024, 5, 1), "batch_id": "batch-0001"}


def _partition(columns: list[str]) -> dict[str, Any]:
    return {k: v for k, v in _PARTITION_VALUES.items() if k in columns}


@pytest.fixture(scope="module")
def lung() -> LoadedModel:
    return load_model(model_dir_for(MODELS, "lung_ldct_reference"), device="cpu")


@pytest.fixture(scope="module")
def cxr() -> LoadedModel:
    return load_model(model_dir_for(MODELS, "cxr_tb_reference"), device="cpu")


def _dataset(pixels: np.ndarray, modality: str, bits: int, study: str) -> Dataset:
    sop = generate_uid()
    sop_class = CTImageStorage if modality == "CT" else ComputedRadiographyImageStorage
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SOPClassUID, ds.SOPInstanceUID, ds.StudyInstanceUID = sop_class, sop, study
    ds.SeriesInstanceUID = study + ".1"
    ds.Modality = modality
    ds.set_pixel_data(pixels, "MONOCHROME2", bits)
    if modality == "CT":
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    return ds


def _ct_slice(hounsfield: np.ndarray, study: str = "1.2.3", z: float = 0.0) -> Dataset:
    """An axial CT slice at position `z` mm of its study's one series."""
    ds = _dataset(ct_stored_values(hounsfield), "CT", 12, study)
    ds.ImagePositionPatient = [-100.0, -100.0, z]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    return ds


def _write(ds: Dataset, root: Path, name: str) -> str:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return name


def _instances(rows: list[tuple[str, ...]], programme: str) -> pl.DataFrame:
    """Rows of (sop_instance_uid, study_instance_uid, research_path, modality[, series]); the
    series defaults to the study's first."""
    part = _partition(INSTANCE_PREDICTIONS.columns)
    return pl.DataFrame(
        [
            {
                **part,
                "programme": programme,
                "sop_instance_uid": row[0],
                "study_instance_uid": row[1],
                "series_instance_uid": row[4] if len(row) > 4 else f"{row[1]}.1",
                "research_path": row[2],
                "modality": row[3],
            }
            for row in rows
        ]
    )


def _copy_model(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(MODELS / name, target)
    return target


# --- registry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lung_ldct_reference", "cxr_tb_reference"])
def test_committed_models_load_and_declare_themselves(name: str) -> None:
    model = load_model(model_dir_for(MODELS, name), device="cpu")
    m = model.manifest
    assert (m.name, m.version, m.format, m.aggregation) == (name, "2.0.0", "state_dict", "max")
    assert not model.module.training and model.device == "cpu"
    assert m.weights_sha256 == sha256_of(MODELS / name / "weights.pt")
    assert (MODELS / name / "weights.pt").stat().st_size < 1_600_000
    assert m.licence and m.training_data and dict(m.operating_points)
    assert "NOT a clinical model" in m.disclaimer
    assert 0.0 < m.threshold < 1.0 and m.evaluation.studies_positive >= 100


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    directory = _copy_model("lung_ldct_reference", tmp_path)
    data = bytearray((directory / "weights.pt").read_bytes())
    data[-100] ^= 0xFF
    (directory / "weights.pt").write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="weights hash .* differs from the manifest"):
        load_model(directory, device="cpu")


@pytest.mark.parametrize(
    "field", ["threshold", "weights_sha256", "input.normalisation", "licence", "training_data"]
)
def test_manifest_missing_field_is_named(tmp_path: Path, field: str) -> None:
    directory = _copy_model("cxr_tb_reference", tmp_path)
    manifest = json.loads((directory / "manifest.json").read_text())
    *parents, leaf = field.split(".")
    node = manifest
    for key in parents:
        node = node[key]
    del node[leaf]
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError) as caught:
        load_manifest(directory / "manifest.json")
    message = str(caught.value)
    assert f"'{field}' is missing" in message and str(directory / "manifest.json") in message


def test_manifest_invalid_values_are_named(tmp_path: Path) -> None:
    directory = _copy_model("cxr_tb_reference", tmp_path)
    manifest = json.loads((directory / "manifest.json").read_text())
    path = directory / "manifest.json"
    for key, value, expected in [
        ("threshold", 1.5, "'threshold' is 1.5, outside"),
        ("format", "onnx", "'format' is 'onnx'; allowed"),
        ("architecture", "resnet", "'architecture' is 'resnet'"),
        ("treshold", 0.5, "'treshold' is not a manifest field"),
    ]:
        path.write_text(json.dumps({**manifest, key: value}))
        with pytest.raises(ModelIntegrityError, match=expected):
            load_manifest(path)
    path.write_text("{not json")
    with pytest.raises(ModelIntegrityError, match="not valid JSON"):
        load_manifest(path)


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
def test_torchscript_model_loads_without_source(tmp_path: Path, cxr: LoadedModel) -> None:
    directory = tmp_path / "scripted"
    directory.mkdir()
    torch.jit.save(torch.jit.script(cxr.module), str(directory / "model.pt"))
    manifest = json.loads((MODELS / "cxr_tb_reference" / "manifest.json").read_text())
    manifest.update(
        format="torchscript",
        architecture=None,
        weights_file="model.pt",
        weights_sha256=sha256_of(directory / "model.pt"),
    )
    (directory / "manifest.json").write_text(json.dumps(manifest))
    scripted = load_model(directory, device="cpu")
    assert scripted.manifest.format == "torchscript"
    x = torch.rand(4, 1, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(scripted.module(x), cxr.module(x))


def _manifest(**changes: Any) -> dict[str, Any]:
    """The cxr reference manifest with top-level keys replaced (None deletes a key)."""
    manifest = json.loads((MODELS / "cxr_tb_reference" / "manifest.json").read_text())
    manifest.update(changes)
    return {k: v for k, v in manifest.items() if v is not None}


def _input(**changes: Any) -> dict[str, Any]:
    """The cxr reference manifest's `input` with keys replaced."""
    return {**_manifest()["input"], **changes}


_SOURCE = Path("models/example/manifest.json")
_URI = "s3://screenlake-models/cxr_tb_reference/1.0.0/weights.pt"


@pytest.mark.parametrize("name", ["lung_ldct_reference", "cxr_tb_reference"])
def test_committed_manifests_declare_licence_and_training_data(name: str) -> None:
    data = json.loads((MODELS / name / "manifest.json").read_text())
    m = load_manifest(MODELS / name / "manifest.json")
    assert m.licence == "Apache-2.0, like screenlake"
    assert "no patient data" in m.training_data
    assert m.training["generator"] in m.training_data
    assert (m.weights_file, m.weights_uri) == ("weights.pt", None)
    assert [name for name, _ in m.operating_points] == ["high_sensitivity"]
    lung = name == "lung_ldct_reference"
    assert (m.input.spacing_mm, m.input.context_slices, m.input.needs_series) == (
        None,
        1 if lung else 0,
        lung,
    )
    assert m.input.to_json() == data["input"]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"licence": None}, "'licence' is missing"),
        ({"licence": " "}, "'licence' must be a non-empty string"),
        ({"training_data": None}, "'training_data' is missing"),
        ({"training_data": 3}, "'training_data' must be a non-empty string"),
        ({"operating_points": [0.5]}, "field 'operating_points' must be a JSON object"),
        ({"operating_points": {"High_Sens": 0.2}}, "'operating_points.High_Sens' is not an"),
        ({"operating_points": {"2nd": 0.2}}, "'operating_points.2nd' is not an operating-point"),
        ({"operating_points": {"rule_out": 1.5}}, r"'operating_points.rule_out' is 1.5, outside"),
        ({"operating_points": {"rule_out": "0.1"}}, "'operating_points.rule_out' must be a num"),
        ({"input": _input(channels=3)}, r"'input.channels' is 3, but context_slices is 0"),
        (
            {"input": _input(channels=3, context_slices=2)},
            r"'input.channels' is 3, .* channels must be 2 \* 2 \+ 1 = 5",
        ),
        ({"input": _input(context_slices=-1)}, r"'input.context_slices' must be an integer >= 0"),
        ({"input": _input(context_slices=True)}, r"'input.context_slices' must be an integer"),
        ({"input": _input(spacing_mm=0)}, "'input.spacing_mm' must be a positive pixel spacing"),
        ({"input": _input(spacing_mm=-0.5)}, r"'input.spacing_mm' is -0.5, outside \[0.0"),
        ({"input": _input(spacing_mm="0.7")}, "'input.spacing_mm' must be a number"),
        ({"weights_uri": _URI}, "'weights_file' and 'weights_uri' are both set"),
        ({"weights_file": None}, "'weights_file' and 'weights_uri' are both missing"),
        ({"weights_file": None, "weights_uri": "s3://screenlake-models"}, "must name one object"),
        ({"weights_file": None, "weights_uri": _URI + "/"}, "must name one object"),
        (
            {"weights_file": None, "weights_uri": "https://x.org/w.pt"},
            "'weights_uri' is not usable",
        ),
        ({"weights_file": None, "weights_uri": "s3://A_B/w.pt"}, "not a valid S3 bucket name"),
        ({"format": "torch_export"}, "'architecture' must be absent or null for format 'torch_"),
        ({"format": "torchscript"}, "'architecture' must be absent or null for format 'torchsc"),
        ({"licenses": "MIT"}, "'licenses' is not a manifest field"),
        ({"input": _input(spacing=0.7)}, "'input.spacing' is not a manifest field"),
    ],
)
def test_manifest_new_fields_are_validated(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(ModelIntegrityError, match=expected) as caught:
        parse_manifest(_manifest(**changes), _SOURCE)
    assert str(_SOURCE) in str(caught.value)


def test_manifest_new_fields_are_read_and_round_trip() -> None:
    lung = json.loads((MODELS / "lung_ldct_reference" / "manifest.json").read_text())
    ct_25d = {**lung["input"], "channels": 5, "context_slices": 2, "spacing_mm": 0.7}
    m = parse_manifest(
        _manifest(
            weights_file=None,
            weights_uri=_URI,
            operating_points={"rule_out": 0.1, "high_specificity": 0.8, "balanced": 0.3},
            input=ct_25d,
            format="torch_export",
            architecture=None,
        ),
        _SOURCE,
    )
    assert (m.weights_file, m.weights_uri, m.format, m.architecture) == (
        None,
        _URI,
        "torch_export",
        None,
    )
    assert m.operating_points == (("balanced", 0.3), ("high_specificity", 0.8), ("rule_out", 0.1))
    assert m.threshold == _manifest()["threshold"]
    assert (m.input.channels, m.input.context_slices, m.input.spacing_mm) == (5, 2, 0.7)
    assert m.input.needs_series
    assert m.input.to_json() == ct_25d


def test_weights_uri_without_cache_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(
        json.dumps(_manifest(weights_file=None, weights_uri=_URI))
    )
    with pytest.raises(ConfigurationError, match=f"{_URI}.*set SCREENLAKE_MODEL_CACHE"):
        load_model(tmp_path, device="cpu")


def _exported_model(
    directory: Path, module: torch.nn.Module, example: torch.Tensor, dynamic: bool = True
) -> Path:
    """`module` exported into `directory` with a manifest like the cxr reference model's."""
    directory.mkdir()
    # A size-1 example dimension is specialised to 1 by torch.export, so a batch dimension that
    # must stay dynamic needs an example batch of at least 2.
    shapes = {"x": {0: torch.export.Dim("batch")}} if dynamic else None
    program = torch.export.export(module, (example,), dynamic_shapes=shapes)
    torch.export.save(program, directory / "model.pt2")
    manifest = _manifest(
        format="torch_export",
        architecture=None,
        weights_file="model.pt2",
        weights_sha256=sha256_of(directory / "model.pt2"),
    )
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def _small_cnn_like(model: LoadedModel) -> torch.nn.Module:
    """A plain module with the cxr reference model's architecture and weights."""
    module = build(model.manifest.architecture or "")
    module.load_state_dict(model.module.state_dict())
    return module.eval()


def test_torch_export_model_loads_without_architecture(tmp_path: Path, cxr: LoadedModel) -> None:
    directory = _exported_model(
        tmp_path / "exported", _small_cnn_like(cxr), torch.rand(2, 1, 224, 224)
    )
    exported = load_model(directory, device="cpu")
    assert (exported.manifest.format, exported.manifest.architecture) == ("torch_export", None)
    assert not any(p.requires_grad for p in exported.module.parameters())
    for batch in (1, 3, 8):
        x = torch.rand(batch, 1, 224, 224)
        with torch.inference_mode():
            torch.testing.assert_close(exported.module(x), cxr.module(x))


def test_torch_export_with_a_fixed_batch_is_refused(tmp_path: Path, cxr: LoadedModel) -> None:
    directory = _exported_model(
        tmp_path / "fixed", _small_cnn_like(cxr), torch.rand(1, 1, 224, 224), dynamic=False
    )
    with pytest.raises(ModelIntegrityError, match=r"cannot read a batch of 2 .*Dim\('batch'\)"):
        load_model(directory, device="cpu")


def test_torch_export_in_training_mode_is_refused(tmp_path: Path, cxr: LoadedModel) -> None:
    module = _small_cnn_like(cxr).train()
    directory = _exported_model(tmp_path / "training", module, torch.rand(2, 1, 224, 224))
    with pytest.raises(ModelIntegrityError, match=r"differently alone and in a batch .*eval"):
        load_model(directory, device="cpu")


def test_torch_export_file_that_is_not_a_program_is_refused(tmp_path: Path) -> None:
    directory = _copy_model("cxr_tb_reference", tmp_path)
    manifest = _manifest(format="torch_export", architecture=None)
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match="not a program saved with torch.export.save"):
        load_model(directory, device="cpu")


def test_model_dir_for_names_what_is_there(tmp_path: Path) -> None:
    assert model_dir_for(MODELS, "cxr_tb_reference") == MODELS / "cxr_tb_reference"
    with pytest.raises(ConfigurationError, match="models there: cxr_tb_reference, lung_ldct"):
        model_dir_for(MODELS, "mammo_reference")
    with pytest.raises(ConfigurationError, match="not a plain folder name"):
        model_dir_for(MODELS, "../etc")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU-only machine")
def test_cuda_device_refused_without_cuda() -> None:
    assert resolve_device(None) == "cpu"
    with pytest.raises(ConfigurationError, match="no CUDA device"):
        resolve_device("cuda")


def test_package_import_does_not_import_torch() -> None:
    code = "import sys, screenlake.inference; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_manifest_module_and_registry_resource_do_not_import_torch() -> None:
    code = (
        "import sys, screenlake.inference.manifest, resources.models; "
        "resources.models.ModelRegistry().manifest_for('cxr_tb'); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_manifest_for_reads_the_programmes_configured_model(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(MODELS, models, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    shutil.copytree(models / "cxr_tb_reference", models / "hospital_cxr_v3")
    manifest = _manifest(name="hospital_cxr_v3", version="3.0.0")
    (models / "hospital_cxr_v3" / "manifest.json").write_text(json.dumps(manifest))

    bundled = ModelRegistry(models_root=str(models))
    assert bundled.manifest_for("cxr_tb") == load_manifest(
        MODELS / "cxr_tb_reference" / "manifest.json"
    )
    chosen = ModelRegistry(models_root=str(models), programme_models={"cxr_tb": "hospital_cxr_v3"})
    assert (chosen.manifest_for("cxr_tb").name, chosen.manifest_for("cxr_tb").version) == (
        "hospital_cxr_v3",
        "3.0.0",
    )
    assert chosen.manifest_for("lung_ldct").name == "lung_ldct_reference"


def test_manifest_for_refuses_a_missing_model_or_a_bad_manifest(tmp_path: Path) -> None:
    missing = ModelRegistry(models_root=str(tmp_path), programme_models={"cxr_tb": "nowhere"})
    with pytest.raises(ConfigurationError, match="no model 'nowhere'.*SCREENLAKE_MODELS"):
        missing.manifest_for("cxr_tb")
    directory = _copy_model("cxr_tb_reference", tmp_path)
    (directory / "manifest.json").write_text(json.dumps(_manifest(threshold=1.5)))
    with pytest.raises(ModelIntegrityError, match="'threshold' is 1.5"):
        ModelRegistry(models_root=str(tmp_path)).manifest_for("cxr_tb")


def test_registry_does_not_import_boto3() -> None:
    code = (
        "import sys, screenlake.inference.registry, resources.models; "
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- preprocessing ----------------------------------------------------------------------------


def test_ct_slice_is_windowed_and_resized(lung: LoadedModel) -> None:
    volume = ct_volume(np.random.default_rng(0), positive=True, slices=8, size=128)
    tensor = instance_tensor(_ct_slice(volume.hounsfield[4]), lung.manifest)
    assert tensor.shape == (1, 96, 96) and tensor.dtype == np.float32
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0 and tensor.max() > 0.3
    # The manifest's window [-1000, 400] HU maps onto [0, 1].
    np.testing.assert_allclose(
        window(np.array([-1000.0, -300.0, 400.0, 900.0]), -300, 1400), [0.0, 0.5, 1.0, 1.0]
    )


def test_cxr_is_normalised_by_bits_stored(cxr: LoadedModel) -> None:
    image = chest_radiograph(np.random.default_rng(0), positive=False, size=256)
    ds = _dataset(image, "DX", 12, "1.2.4")
    tensor = instance_tensor(ds, cxr.manifest)
    assert tensor.shape == (1, 224, 224) and 0.0 <= tensor.min() and tensor.max() <= 1.0
    # Area resampling 256 -> 224 keeps the mean to within rounding at the image's edge.
    np.testing.assert_allclose(tensor.mean(), image.mean() / 4095, rtol=1e-3)
    ds.PhotometricInterpretation = "MONOCHROME1"
    np.testing.assert_allclose(instance_tensor(ds, cxr.manifest), 1.0 - tensor, atol=1e-6)


def test_unusable_instances_are_refused_with_a_reason(lung: LoadedModel) -> None:
    hu = np.full((32, 32), -850.0, dtype=np.float32)
    wrong = _dataset(ct_stored_values(hu), "MR", 12, "1.2.5")
    with pytest.raises(UnreadableInstanceError, match="modality MR is not read by model"):
        instance_tensor(wrong, lung.manifest)
    multi = _ct_slice(hu)
    multi.NumberOfFrames = 3
    with pytest.raises(UnreadableInstanceError, match="multi-frame"):
        instance_tensor(multi, lung.manifest)
    no_rescale = _ct_slice(hu)
    del no_rescale.RescaleIntercept
    with pytest.raises(UnreadableInstanceError, match="Hounsfield units are unknown"):
        instance_tensor(no_rescale, lung.manifest)
    truncated = _ct_slice(hu)
    truncated.PixelData = truncated.PixelData[:-200]
    with pytest.raises(UnreadableInstanceError, match="pixel data do not decode"):
        instance_tensor(truncated, lung.manifest)


# --- batched inference ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ct_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.DataFrame]:
    root = tmp_path_factory.mktemp("research")
    rng = np.random.default_rng(7)
    rows = []
    for s, positive in enumerate([True, False]):
        volume = ct_volume(rng, positive, slices=8, size=96)
        study = f"2.25.{s + 1}"
        for k in range(8):
            ds = _ct_slice(volume.hounsfield[k], study, z=2.5 * k)
            rows.append((ds.SOPInstanceUID, study, _write(ds, root, f"{study}/{k}.dcm"), "CT"))
    # Bad files in a series of their own: a 2.5D model fails a whole series for one bad slice.
    bad = "2.25.2.9"
    corrupt = _ct_slice(np.zeros((96, 96), np.float32), "2.25.2")
    corrupt.PixelData = corrupt.PixelData[:-200]
    rows.append(("2.25.9.1", "2.25.2", _write(corrupt, root, "2.25.2/corrupt.dcm"), "CT", bad))
    rows.append(("2.25.9.2", "2.25.2", "2.25.2/missing.dcm", "CT", bad))
    (root / "2.25.2" / "junk.dcm").write_bytes(b"not dicom at all" * 20)
    rows.append(("2.25.9.3", "2.25.2", "2.25.2/junk.dcm", "CT", bad))
    rows.append(("2.25.9.4", "2.25.2", "2.25.2/0.dcm", "MR", bad))
    return root, _instances(rows, "lung_ldct")


def test_predict_instances_one_row_per_input(
    ct_files: tuple[Path, pl.DataFrame], lung: LoadedModel
) -> None:
    root, instances = ct_files
    predictions = predict_instances(instances, root, lung, batch_size=5)
    conform(predictions, INSTANCE_PREDICTIONS)
    assert predictions["sop_instance_uid"].to_list() == instances["sop_instance_uid"].to_list()
    ok = predictions.filter(pl.col("status") == "ok")
    failed = predictions.filter(pl.col("status") == "failed")
    assert ok.height == 16 and ok["score"].is_between(0.0, 1.0).all()
    assert ok["failure_reason"].null_count() == 16
    assert failed["score"].null_count() == 4
    reasons = dict(zip(failed["sop_instance_uid"], failed["failure_reason"], strict=True))
    assert "number of bytes of pixel data is less than expected" in reasons["2.25.9.1"]
    assert "file cannot be read" in reasons["2.25.9.2"]
    assert "not a DICOM file" in reasons["2.25.9.3"]
    assert "modality MR" in reasons["2.25.9.4"]
    assert set(predictions["weights_sha256"]) == {lung.manifest.weights_sha256}
    assert set(predictions["model_version"]) == {"2.0.0"}


def test_workers_give_the_same_predictions(
    ct_files: tuple[Path, pl.DataFrame], lung: LoadedModel
) -> None:
    root, instances = ct_files
    run = run_predictions(instances, root, lung, batch_size=8, num_workers=2)
    # Batches are model calls: the 16 readable images in two of 8; the 4 failures take none.
    assert (run.instances, run.failed, run.batches) == (20, 4, 2)
    assert run.loader_seconds > 0 and run.model_seconds > 0
    single = predict_instances(instances, root, lung, batch_size=8)
    assert run.predictions["status"].to_list() == single["status"].to_list()
    np.testing.assert_allclose(
        run.predictions["score"].fill_null(-1).to_numpy(), single["score"].fill_null(-1).to_numpy()
    )


def test_no_instances_give_no_rows(lung: LoadedModel, tmp_path: Path) -> None:
    empty = _instances([("x", "y", "z", "CT")], "lung_ldct").clear()
    predictions = predict_instances(empty, tmp_path, lung)
    assert predictions.height == 0
    conform(predictions, INSTANCE_PREDICTIONS)


def test_instances_of_another_programme_are_refused(
    ct_files: tuple[Path, pl.DataFrame], cxr: LoadedModel
) -> None:
    root, instances = ct_files
    with pytest.raises(ConfigurationError, match="serves programme cxr_tb"):
        predict_instances(instances, root, cxr)


def _studies(uids: list[str], programme: str) -> pl.DataFrame:
    part = _partition(STUDY_FINDINGS.columns)
    return pl.DataFrame(
        [
            {
                **part,
                "programme": programme,
                "study_instance_uid": uid,
                "patient_pseudonym": f"P{i}",
                "study_date": date(2024, 4, 30),
            }
            for i, uid in enumerate(uids)
        ]
    )


def _score_studies(
    model: LoadedModel, root: Path, studies: list[tuple[str, list[Dataset]]]
) -> dict[str, float]:
    rows = []
    for study, datasets in studies:
        for k, ds in enumerate(datasets):
            rows.append(
                (ds.SOPInstanceUID, study, _write(ds, root, f"{study}/{k}.dcm"), ds.Modality)
            )
    programme = model.manifest.programme
    predictions = predict_instances(_instances(rows, programme), root, model, batch_size=64)
    findings = study_findings(
        predictions, _studies([s for s, _ in studies], programme), model.manifest
    )
    return dict(zip(findings["study_instance_uid"], findings["score"], strict=True))


def test_reference_lung_model_scores_positives_higher(tmp_path: Path, lung: LoadedModel) -> None:
    rng = np.random.default_rng(2024)
    studies, truth = [], {}
    for i, positive in enumerate([True, False] * 3):
        volume = ct_volume(rng, positive, slices=24, size=96)
        uid = f"2.25.10{i}"
        studies.append((uid, [_ct_slice(volume.hounsfield[k], uid, z=2.5 * k) for k in range(24)]))
        truth[uid] = positive
    scores = _score_studies(lung, tmp_path, studies)
    positives = [scores[u] for u, p in truth.items() if p]
    negatives = [scores[u] for u, p in truth.items() if not p]
    assert np.mean(positives) > np.mean(negatives) + 0.3


def test_reference_cxr_model_scores_positives_higher(tmp_path: Path, cxr: LoadedModel) -> None:
    rng = np.random.default_rng(2024)
    studies, truth = [], {}
    for i, positive in enumerate([True, False] * 4):
        uid = f"2.25.20{i}"
        studies.append((uid, [_dataset(chest_radiograph(rng, positive), "DX", 12, uid)]))
        truth[uid] = positive
    scores = _score_studies(cxr, tmp_path, studies)
    positives = [scores[u] for u, p in truth.items() if p]
    negatives = [scores[u] for u, p in truth.items() if not p]
    assert np.mean(positives) > np.mean(negatives) + 0.3


# --- study findings ---------------------------------------------------------------------------


def _predictions(
    rows: list[tuple[str, str, float | None]], manifest: ModelManifest
) -> pl.DataFrame:
    part = _partition(INSTANCE_PREDICTIONS.columns)
    return pl.DataFrame(
        [
            {
                **part,
                "programme": manifest.programme,
                "sop_instance_uid": f"{study}.{i}",
                "study_instance_uid": study,
                "status": "failed" if score is None else "ok",
                "score": score,
                "failure_reason": "bad pixels" if score is None else None,
                "model_name": manifest.name,
                "model_version": manifest.version,
                "weights_sha256": manifest.weights_sha256,
            }
            for i, (study, _, score) in enumerate(rows)
        ],
        schema_overrides={"score": pl.Float64, "failure_reason": pl.String},
    )


def test_study_findings_aggregate_flag_and_rank(cxr: LoadedModel) -> None:
    manifest = cxr.manifest
    t = manifest.threshold
    rows = [
        ("A", "", 0.1),
        ("A", "", min(t + 0.05, 1.0)),
        ("A", "", None),  # flagged, 1 failed
        ("B", "", t / 2),  # scored, not flagged
        ("C", "", None),
        ("C", "", None),  # nothing scored
        ("E", "", 1.0),  # flagged, top score
        ("F", "", t),  # exactly at threshold
    ]
    findings = study_findings(
        _predictions(rows, manifest), _studies(["A", "B", "C", "D", "E", "F"], "cxr_tb"), manifest
    )
    conform(findings, STUDY_FINDINGS)
    by = {r["study_instance_uid"]: r for r in findings.iter_rows(named=True)}
    assert by["A"]["score"] == pytest.approx(min(t + 0.05, 1.0)) and by["A"]["flag"] is True
    assert (by["A"]["instances_scored"], by["A"]["instances_failed"]) == (2, 1)
    assert by["B"]["flag"] is False and by["F"]["flag"] is True
    for unread in ("C", "D"):
        assert by[unread]["score"] is None and by[unread]["flag"] is None
    assert (by["C"]["instances_scored"], by["C"]["instances_failed"]) == (0, 2)
    assert (by["D"]["instances_scored"], by["D"]["instances_failed"]) == (0, 0)
    ranked = findings.sort("priority_rank")["study_instance_uid"].to_list()
    assert ranked == ["E", "A", "F", "B", "C", "D"]
    assert findings["priority_rank"].to_list() == sorted(findings["priority_rank"].to_list())
    assert set(findings["threshold"]) == {t}


def test_study_findings_refuse_predictions_of_other_weights(cxr: LoadedModel) -> None:
    predictions = _predictions([("A", "", 0.5)], cxr.manifest).with_columns(
        pl.lit("0" * 64).alias("weights_sha256")
    )
    with pytest.raises(ModelIntegrityError, match="re-run instance predictions"):
        study_findings(predictions, _studies(["A"], "cxr_tb"), cxr.manifest)


def test_mean_aggregation() -> None:
    predictions = pl.DataFrame(
        {
            "study_instance_uid": ["A", "A", "A"],
            "status": ["ok", "ok", "failed"],
            "score": [0.2, 0.6, None],
        }
    )
    per_study = aggregate_study_scores(predictions, "mean")
    assert per_study.row(0) == ("A", pytest.approx(0.4), 2, 1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_predictions_match_cpu(ct_files: tuple[Path, pl.DataFrame], lung: LoadedModel) -> None:
    root, instances = ct_files
    on_gpu = load_model(lung.directory)
    assert on_gpu.device == "cuda"
    gpu = predict_instances(instances, root, on_gpu, batch_size=8, num_workers=2)
    cpu = predict_instances(instances, root, lung, batch_size=8)
    assert gpu["status"].to_list() == cpu["status"].to_list()
    # float16 autocast on the GPU: close to, not equal to, the CPU's float32 scores.
    np.testing.assert_allclose(
        gpu["score"].fill_null(-1).to_numpy(), cpu["score"].fill_null(-1).to_numpy(), atol=2e-2
    )
