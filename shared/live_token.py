"""The LIVE confirmation token: one rule, used by risk (its gate) and the executor (start and every entry).

The operator's ``LIVE_CONFIRM_TOKEN`` matches when it equals the token on file
(``LIVE_CONFIRM_TOKEN_FILE``) after surrounding whitespace is removed from both (a file's trailing
newline, a pasted space); an empty token or an empty, missing or unreadable file never matches.
Compared in constant time.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

TokenStatus = Literal["ok", "missing", "file_missing", "mismatch"]


def read_token_file(path: str | Path) -> str | None:
    """The token on file (stripped), or None when the file is missing, unreadable or empty."""
    try:
        text = Path(path).read_text().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.error("cannot read the live confirmation token file %s: %s", path, type(exc).__name__)
        return None
    return text or None


def token_status(given: str | None, on_file: str | None) -> TokenStatus:
    """``ok`` when ``given`` matches ``on_file`` under the rule above; else why not."""
    token = (given or "").strip()
    if not token:
        return "missing"
    if not on_file:
        return "file_missing"
    return "ok" if hmac.compare_digest(token.encode(), on_file.strip().encode()) else "mismatch"
