"""The two secrets: the pseudonym key and the vault key, read from the environment at run time
(through `dg.EnvVar`, so they never show in the UI) and validated before any file is touched."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from screenlake.keys import PSEUDONYM_KEY_ENV, validate_pseudonym_key
from screenlake.vault import VAULT_KEY_ENV, vault_cipher

if TYPE_CHECKING:
    from cryptography.fernet import Fernet


class PseudonymKey(dg.ConfigurableResource):
    """The deployment's pseudonym key, named by the environment variable that holds it."""

    env_var: str = PSEUDONYM_KEY_ENV

    def key(self) -> bytes:
        """The key's bytes; raises PseudonymKeyError with instructions when missing or short."""
        return validate_pseudonym_key(dg.EnvVar(self.env_var).get_value(), self.env_var)


class VaultKey(dg.ConfigurableResource):
    """The re-identification vault's encryption key, kept apart from the pseudonym key."""

    env_var: str = VAULT_KEY_ENV

    def cipher(self) -> Fernet:
        """The vault cipher; raises VaultError with instructions when the key is missing or bad."""
        return vault_cipher(dg.EnvVar(self.env_var).get_value(), self.env_var)
