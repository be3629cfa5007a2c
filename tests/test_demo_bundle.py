"""The demo serves Web Chat's npm bundle in place of the CDN, for the very release the pages name."""

from __future__ import annotations

import json
from pathlib import Path

from demo.bundle import BUNDLE_PATH, find_local_bundle

CDN = b"https://cdn.botframework.com/botframework-webchat/{}/webchat.js"


def _package(tmp_path: Path, version: str, *, bundle: bool = True) -> Path:
    package = tmp_path / "botframework-webchat"
    (package / "dist").mkdir(parents=True)
    (package / "package.json").write_text(json.dumps({"version": version}), encoding="utf-8")
    if bundle:
        (package / "dist" / "webchat.js").write_text("window.WebChat = {};", encoding="utf-8")
    return package


def test_the_pages_cdn_address_of_the_installed_release_points_at_the_local_bundle(tmp_path: Path) -> None:
    bundle = find_local_bundle(_package(tmp_path, "4.18.1"))
    assert bundle is not None
    page = b'<script src="' + CDN.replace(b"{}", b"4.18.1") + b'" integrity="sha384-x"></script>'
    assert bundle.rewrite(page) == b'<script src="' + BUNDLE_PATH.encode() + b'" integrity="sha384-x"></script>'


def test_another_release_keeps_the_cdn_since_its_integrity_hash_would_not_match(tmp_path: Path) -> None:
    bundle = find_local_bundle(_package(tmp_path, "4.18.1"))
    assert bundle is not None
    page = CDN.replace(b"{}", b"4.17.0")
    assert bundle.rewrite(page) == page


def test_without_npms_install_there_is_no_local_bundle(tmp_path: Path) -> None:
    assert find_local_bundle(tmp_path / "nothing-here") is None
    assert find_local_bundle(_package(tmp_path, "4.18.1", bundle=False)) is None


def test_the_sample_pages_name_the_release_that_npm_pins() -> None:
    root = Path(__file__).resolve().parent.parent
    pinned = json.loads((root / "web" / "package.json").read_text(encoding="utf-8"))["dependencies"]["botframework-webchat"]
    for name in ("index.html", "widget.html"):
        assert CDN.replace(b"{}", pinned.encode()) in (root / "web" / name).read_bytes(), name


def test_the_pages_integrity_hash_is_the_npm_bundles_own() -> None:
    """Microsoft's published hash for 4.18.1's webchat.js, checked against the file byte for byte."""
    import base64
    import hashlib
    import re

    from tests.prerequisites import missing_prerequisite

    bundle = find_local_bundle()
    if bundle is None:
        missing_prerequisite("Web Chat is not installed in web/node_modules; run `cd web && npm ci`")
    digest = "sha384-" + base64.b64encode(hashlib.sha384(bundle.path.read_bytes()).digest()).decode()
    root = Path(__file__).resolve().parent.parent
    for name in ("index.html", "widget.html"):
        hashes = re.findall(r"sha384-[A-Za-z0-9+/=]+", (root / "web" / name).read_text(encoding="utf-8"))
        assert hashes == [digest], name
