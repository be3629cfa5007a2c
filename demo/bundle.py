"""Web Chat's bundle for the demo, from `web/node_modules` when `cd web && npm ci` has put it there,
so that the demo needs no internet at all.

The sample pages load Web Chat from its CDN, as a site would. When the npm package holds the very
release the pages name, the demo serves its `dist/webchat.js` at BUNDLE_PATH and points the pages'
CDN address there; the pages' integrity hash still holds, since the file is the same release byte for
byte. Otherwise the pages keep the CDN, and the browser needs the internet to load Web Chat.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NamedTuple

PACKAGE = Path(__file__).resolve().parent.parent / "web" / "node_modules" / "botframework-webchat"
BUNDLE_PATH = "/webchat/webchat.js"
_CDN_URL = re.compile(rb"https://cdn\.botframework\.com/botframework-webchat/(?P<version>[0-9][0-9A-Za-z.-]*)/webchat\.js")


class LocalBundle(NamedTuple):
    version: str
    path: Path

    def rewrite(self, page: bytes) -> bytes:
        """The page with the CDN address of this release pointed at BUNDLE_PATH (other releases, which
        this file is not, keep the CDN)."""

        def local(match: re.Match[bytes]) -> bytes:
            return BUNDLE_PATH.encode() if match["version"].decode() == self.version else match[0]

        return _CDN_URL.sub(local, page)


def find_local_bundle(package: Path = PACKAGE) -> LocalBundle | None:
    """The installed Web Chat release and its bundle, or None when npm has not installed it."""
    try:
        version = json.loads((package / "package.json").read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    bundle = package / "dist" / "webchat.js"
    return LocalBundle(str(version), bundle) if bundle.is_file() else None
