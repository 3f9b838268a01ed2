"""detect-secrets plugins for Alpaca key shapes (a plugin file: detect-secrets imports it by path).

Use: `detect-secrets scan --plugin tests/hardening/alpaca_keys.py`, or
tests/hardening/secret_scan.py, which runs them beside detect-secrets' own plugins.
"""

import re

from detect_secrets.plugins import base as _base


class AlpacaKeyIdDetector(_base.RegexBasedDetector):
    """Alpaca API key ids: PK (paper) or AK (live) and 18 upper-case letters or digits."""

    secret_type = "Alpaca API Key ID"  # pragma: allowlist secret
    denylist = (re.compile(r"(?<![A-Za-z0-9])(?:PK|AK)[A-Z0-9]{18}(?![A-Za-z0-9])"),)


class AlpacaSecretKeyDetector(_base.RegexBasedDetector):
    """Alpaca API secret keys: 40 letters and digits, mixed case (a sha1's hex digits are not)."""

    secret_type = "Alpaca API Secret Key"  # pragma: allowlist secret
    denylist = (
        re.compile(
            r"(?<![A-Za-z0-9/+])"
            r"(?=[A-Za-z0-9]{0,39}[a-z])(?=[A-Za-z0-9]{0,39}[A-Z])(?=[A-Za-z0-9]{0,39}[0-9])"
            r"[A-Za-z0-9]{40}(?![A-Za-z0-9/+])"
        ),
    )
