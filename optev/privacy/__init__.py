"""Privacy (R6.4.1): keyed pseudonyms with versioned, rotatable keys; the consent registry; small-cell suppression.

Modules
-------
:mod:`optev.privacy.pseudonym`
    ``kind-version-hex16`` pseudonyms (HMAC-SHA256 under a versioned key kept outside the data),
    key files (mode 0600) and the ``OPTEV_PSEUDONYM_KEYS`` variable, rotation and retention.
:mod:`optev.privacy.consent`
    The append-only consent registry (granted / modified / withdrawn per purpose, notice version,
    time) on SQLite/SQLAlchemy, its state at any time, and its use in a control decision.
:mod:`optev.privacy.aggregate`
    Publishable tables: station level or above only, cells of fewer than k EVs suppressed.
"""

from optev.privacy.aggregate import DEFAULT_K, aggregate_publishable, suppress_small_cells
from optev.privacy.consent import (PURPOSES, ConsentRegistry, ControlConsent, control_consent, honour_consent,
                                   restrict_evs)
from optev.privacy.pseudonym import (KEY_ENV, Keyring, create_keyfile, is_pseudonym, key_version, load_keyring,
                                     rotate_keyfile, save_keyring)

__all__ = ["DEFAULT_K", "KEY_ENV", "PURPOSES", "ConsentRegistry", "ControlConsent", "Keyring",
           "aggregate_publishable", "control_consent", "create_keyfile", "honour_consent", "is_pseudonym",
           "key_version", "load_keyring", "restrict_evs", "rotate_keyfile", "save_keyring", "suppress_small_cells"]
