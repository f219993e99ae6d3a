"""Domain errors. Each message says what is wrong and what to do about it."""

from __future__ import annotations


class ScreenlakeError(Exception):
    """Base class for every error screenlake raises on purpose."""


class ConfigurationError(ScreenlakeError, ValueError):
    """A setting is missing or invalid; the message names the setting and how to fix it."""


class PseudonymKeyError(ConfigurationError):
    """The pseudonym key is missing or too short to be safe."""


class KeyBindingError(ConfigurationError):
    """A zone's key binding (the fingerprint of the key its data was made with) is unreadable,
    or a rotation was asked for without what it needs."""


class KeyMismatchError(KeyBindingError):
    """The key in the environment is valid but is not the key its zone is bound to."""


class VaultError(ScreenlakeError):
    """The re-identification vault cannot be opened, decrypted or written."""


class ModelIntegrityError(ScreenlakeError):
    """A model's manifest is invalid or its weights differ from what the manifest declares."""


class UnreadableInstanceError(ScreenlakeError):
    """An input file cannot be used; the message is the quarantine reason."""


class PacsError(ScreenlakeError):
    """A PACS could not answer what screenlake asked of it. Messages name the endpoint (URL, or
    host:port and AE titles) and counts, never a patient, a UID or a path that holds one."""


class PacsUnavailableError(PacsError):
    """The PACS stayed unreachable or kept failing after every retry; the message names it."""


class PacsRefusedError(PacsError):
    """The PACS refused us for a reason retrying cannot fix: credentials, AE titles, access."""


class IncompleteRetrievalError(PacsError):
    """Some instances the PACS listed could not be retrieved; the partition is incomplete."""


class IncompleteLandingError(ScreenlakeError):
    """Fewer files landed than the source listed; what did land is kept for the re-run."""


class ObjectStoreError(ScreenlakeError):
    """An object store (S3 or S3-compatible) refused, could not be reached, or lacks a bucket."""


class ReviewFileError(ScreenlakeError, ValueError):
    """A filled-in worklist cannot be imported; the message names the row and what to fix."""


class ReportPrivacyError(ScreenlakeError):
    """The report would show a real study day in the research zone; it is not written."""


class RunEndedError(ScreenlakeError):
    """A step is still working for a run that has ended (failed, canceled, or failed by run
    monitoring when its run worker died); it stops before publishing. Re-execute the partition."""


class ObjectionRegisterError(ScreenlakeError):
    """The objection register cannot be read or changed as asked; the message says why and never
    names the patient."""
