"""The running operator does not load what only rare paths need (docs/benchmarks.md: its memory
is measured against a minimal kopf operator)."""

from __future__ import annotations

import subprocess
import sys

from coai_operator.migration import certs


def test_the_operator_starts_without_cryptography_which_only_key_generation_needs() -> None:
    probe = "import sys, coai_operator.main; print('cryptography' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_key_generation_still_loads_it_when_asked() -> None:
    pair = certs.generate_pem_pair()
    assert pair["private.pem"].startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pair["public.pem"].startswith(b"-----BEGIN PUBLIC KEY-----")
