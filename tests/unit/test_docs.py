"""Documentation that is generated or linked: the API reference matches the CRDs, and the README's
links to files in the repo resolve."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Written by other parts of the project; the README links them ahead of time.
LINKED_AHEAD = {"docs/real-app.md"}


def test_api_reference_is_generated_from_the_current_crds() -> None:
    done = subprocess.run([sys.executable, str(REPO / "docs" / "generate_api_reference.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_api_reference_lists_every_spec_field_of_both_kinds() -> None:
    import yaml

    text = (REPO / "docs" / "api-reference.md").read_text()
    for crd in sorted((REPO / "crds").glob("*.yaml")):
        schema = yaml.safe_load(crd.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for name in schema["properties"]["spec"]["properties"]:
            assert f"| `{name}` |" in text, f"{crd.name}: spec.{name}"


def test_readme_is_short_and_its_links_resolve() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 230
    assert readme.index("make demo") < readme.index("make test") < 400  # the two commands first
    assert "```mermaid" in readme
    for target in re.findall(r"\]\(((?!https?://|#)[^)#]+)", readme):
        if target not in LINKED_AHEAD:
            assert (REPO / target).exists(), target
