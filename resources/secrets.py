"""The two secrets: the pseudonym key and the vault key, read from the environment at run time
(through `dg.EnvVar`, so they never show in the UI), validated, and checked against the key
their zone is bound to (see `screenlake.keybinding`) each time an asset asks for them. The
ingest assets ask for both with `require_keys` before any file is listed or landed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from resources.zones import ZoneStore
from screenlake.keybinding import (
    KeyInUse,
    pseudonym_key_in_use,
    require_bound,
    vault_key_in_use,
)
from screenlake.keys import PSEUDONYM_KEY_ENV
from screenlake.vault import VAULT_KEY_ENV, vault_cipher

if TYPE_CHECKING:
    from cryptography.fernet import Fernet


class PseudonymKey(dg.ConfigurableResource):
    """The deployment's pseudonym key, named by the environment variable that holds it, and
    the research zone, which is bound to the key its pseudonyms are made with."""

    zone: ZoneStore
    env_var: str = PSEUDONYM_KEY_ENV

    def in_use(self) -> KeyInUse:
        """The key, validated (PseudonymKeyError when missing or short) but not yet checked
        against the research zone's binding."""
        return pseudonym_key_in_use(dg.EnvVar(self.env_var).get_value(), self.env_var, self.zone)

    def key(self) -> bytes:
        """The key's bytes, once the research zone is bound to it (a first run binds it);
        raises KeyMismatchError, pointing to the rotation procedure, for any other key."""
        key = self.in_use()
        require_bound([key])
        return key.secret


class VaultKey(dg.ConfigurableResource):
    """The re-identification vault's encryption key, kept apart from the pseudonym key, and
    the PHI zone, which is bound to the key its vaults are encrypted with."""

    zone: ZoneStore
    env_var: str = VAULT_KEY_ENV

    def in_use(self) -> KeyInUse:
        """The key, validated (VaultError when missing or malformed) but not yet checked
        against the PHI zone's binding."""
        return vault_key_in_use(dg.EnvVar(self.env_var).get_value(), self.env_var, self.zone)

    def cipher(self) -> Fernet:
        """The vault cipher, once the PHI zone is bound to the key; raises VaultError when the
        key is missing or bad and KeyMismatchError when it is not the bound key."""
        value = dg.EnvVar(self.env_var).get_value()
        cipher = vault_cipher(value, self.env_var)
        require_bound([vault_key_in_use(value, self.env_var, self.zone)])
        return cipher


def require_keys(pseudonym_key: PseudonymKey, vault_key: VaultKey) -> None:
    """Both keys well-formed and the ones their zones are bound to, binding the zones on a
    deployment's first run. Both are validated before either binding is read or written, so a
    bad key leaves every zone as it was."""
    require_bound([pseudonym_key.in_use(), vault_key.in_use()])
