"""Domain errors. Each message says what is wrong and what to do about it."""

from __future__ import annotations


class ScreenlakeError(Exception):
    """Base class for every error screenlake raises on purpose."""


class ConfigurationError(ScreenlakeError, ValueError):
    """A setting is missing or invalid; the message names the setting and how to fix it."""


class PseudonymKeyError(ConfigurationError):
    """The pseudonym key is missing or too short to be safe."""


class VaultError(ScreenlakeError):
    """The re-identification vault cannot be opened, decrypted or written."""


class ModelIntegrityError(ScreenlakeError):
    """A model's manifest is invalid or its weights differ from what the manifest declares."""


class UnreadableInstanceError(ScreenlakeError):
    """An input file cannot be used; the message is the quarantine reason."""
