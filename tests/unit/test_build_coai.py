"""e2e/localcluster/build_coai.py: sources are verified before anything is built."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "e2e" / "localcluster"))
import build_coai

sys.path.pop(0)


def test_the_table_matches_the_shared_readme_when_present() -> None:
    readme = build_coai.source_dir() / "README.md"
    if not readme.is_file():
        pytest.skip("no ../shared/coai-src here (users cloning the repo use COAI_SOURCE_GIT)")
    text = readme.read_text()
    for version, src in build_coai.SOURCES.items():
        assert f"| {version} | {src.upstream_tag} | {src.commit} | {src.sha256} |" in text


def test_an_archive_with_another_checksum_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "coai-3.10.5.tar.gz").write_bytes(b"not the release")
    monkeypatch.setenv("COAI_SOURCE_DIR", str(tmp_path))
    monkeypatch.setenv("COAI_E2E_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("COAI_SOURCE_GIT", raising=False)
    monkeypatch.setattr(build_coai, "CACHE_ROOT", tmp_path / "cache")
    with pytest.raises(build_coai.SourceError, match=r"sha256 .* differs from the expected"):
        build_coai.ensure_built("3.10.5")
    assert not (tmp_path / "cache" / "coai" / "3.10.5" / "34d759e80b4ba43e" / "chat").exists()


def test_a_missing_archive_says_how_to_get_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COAI_SOURCE_DIR", str(tmp_path))
    monkeypatch.delenv("COAI_SOURCE_GIT", raising=False)
    monkeypatch.setattr(build_coai, "CACHE_ROOT", tmp_path / "cache")
    with pytest.raises(build_coai.SourceError, match="COAI_SOURCE_GIT"):
        build_coai.ensure_built("4.25.0")


def test_unknown_versions_and_the_cache_key() -> None:
    with pytest.raises(build_coai.SourceError, match=r"known: 3\.10\.5, 3\.11\.1, 4\.24\.2, 4\.25\.0"):
        build_coai.build_dir("9.9.9")
    assert build_coai.build_dir("4.25.0").parts[-3:] == ("coai", "4.25.0", "49ebfb7e5c57b2e0")
