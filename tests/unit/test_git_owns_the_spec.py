"""Git owns the CoaiInstance spec: no code path of the operator writes it (static check,
tests/spec_writers.py). e2e/test_gitops.py checks the same on a live apiserver through managedFields.
"""

from __future__ import annotations

import pytest

from tests.spec_writers import package_spec_writers, spec_writers


def test_nothing_writes_the_instance_spec() -> None:
    assert package_spec_writers() == set()


@pytest.mark.parametrize(("source", "expected"), [
    ("def f(k):\n    k.patch(c.API_VERSION, c.INSTANCE_KIND, ns, n, {'spec': {}})\n", {"x:f"}),
    ("def f(k):\n    k.patch(c.API_VERSION, c.INSTANCE_KIND, ns, n, {'status': {}}, subresource='status')\n", set()),
    ("def f(k):\n    k.replace({'kind': 'CoaiInstance', 'spec': {}})\n", {"x:f"}),
    ("def f(k):\n    k.request('PUT', '/apis/coai.dev/v1alpha1/namespaces/ns/coaiinstances/x')\n", {"x:f"}),
    ("def f(k):\n    k.request('PUT', path(INSTANCE_PLURAL))\n", {"x:f"}),
    ("def f(k):\n    k.get(c.API_VERSION, c.INSTANCE_KIND, ns, n)\n", set()),
    ("def f(k):\n    k.patch('v1', 'Secret', ns, n, {'data': {}})\n", set()),
])
def test_the_check_sees_writes(source: str, expected: set[str]) -> None:
    assert spec_writers(source, "x") == expected
