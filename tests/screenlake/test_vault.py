from __future__ import annotations

from datetime import date
from pathlib import Path

import pydicom
import pytest
from cryptography.fernet import Fernet
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from screenlake.errors import VaultError
from screenlake.keys import keyed_uid, patient_pseudonym
from screenlake.vault import read_vault, vault_cipher, vault_entries, write_vault


def _original(path: Path, patient_id: str, study_uid: str, accession: str) -> Path:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = study_uid + ".1"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = study_uid + ".1"
    ds.PatientID, ds.StudyInstanceUID, ds.AccessionNumber = patient_id, study_uid, accession
    ds.StudyDate = "20240312"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_entries_round_trip_encrypted(tmp_path: Path, pseudonym_key: bytes) -> None:
    files = [
        _original(tmp_path / "a.dcm", "7654321", "1.2.3.4", "1000000001"),
        _original(tmp_path / "b.dcm", "7654321", "1.2.3.4", "1000000001"),  # same study
        _original(tmp_path / "c.dcm", "1234567", "1.2.3.5", "1000000002"),
    ]
    entries = vault_entries(files, pseudonym_key)
    assert entries.height == 2
    first = entries.filter(entries["original_study_instance_uid"] == "1.2.3.4").row(0, named=True)
    assert first["patient_pseudonym"] == patient_pseudonym(pseudonym_key, "7654321")
    assert first["study_instance_uid"] == keyed_uid(pseudonym_key, "1.2.3.4")
    assert first["original_study_date"] == date(2024, 3, 12)

    cipher = vault_cipher(Fernet.generate_key().decode())
    path = tmp_path / "vault" / "vault.parquet.enc"
    write_vault(entries, path, cipher)
    raw = path.read_bytes()
    assert b"7654321" not in raw and b"1000000001" not in raw
    assert read_vault(path, cipher).equals(entries)


def test_wrong_or_missing_vault_key_is_a_clear_error(tmp_path: Path, pseudonym_key: bytes) -> None:
    entries = vault_entries([_original(tmp_path / "a.dcm", "1", "1.2.3", "9")], pseudonym_key)
    path = tmp_path / "vault.enc"
    write_vault(entries, path, vault_cipher(Fernet.generate_key().decode()))
    with pytest.raises(VaultError, match="cannot be decrypted"):
        read_vault(path, vault_cipher(Fernet.generate_key().decode()))
    with pytest.raises(VaultError, match="SCREENLAKE_VAULT_KEY is not set"):
        vault_cipher(None)
    with pytest.raises(VaultError, match="not a valid Fernet key"):
        vault_cipher("short")
    with pytest.raises(VaultError, match="missing"):
        read_vault(tmp_path / "absent.enc", vault_cipher(Fernet.generate_key().decode()))
