"""Drivers for real SIP peers used by the telephony tests (SIPp, baresip, linphonec, kamailio) and the
media they send (espeak-ng speech turned into RTP pcaps).

Every runner starts its peer as a subprocess in its own session on 127.0.0.1, writes its config and logs
under a per-test directory, and is killed (the whole process group) by ``close()``; use them as context
managers or from fixtures. A missing binary raises ``PeerMissing`` whose message carries the install hint
(``./dev test`` installs every peer), so tests fail loudly instead of skipping.
"""

from __future__ import annotations

import shutil

__all__ = ["INSTALL_HINT", "PeerMissing", "require_binary"]

INSTALL_HINT = "run ./dev test (it apt-installs sip-tester, baresip-core, linphone-cli, kamailio, espeak-ng, sox)"


class PeerMissing(RuntimeError):
    """A peer binary is not on PATH."""


def require_binary(name: str) -> str:
    """The absolute path of ``name``; raises ``PeerMissing`` with the install hint when it is absent."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        raise PeerMissing(f"{name} is not installed: {INSTALL_HINT}")
    return path
