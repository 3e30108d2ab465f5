"""Credentials of the local cluster: one CA signs every certificate (apiserver, kubelet, node clients)."""

from __future__ import annotations

import subprocess
from pathlib import Path

APISERVER_SANS = ("IP:127.0.0.1", "IP:10.96.0.1", "DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default",
                  "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def issue(pki: Path, name: str, subject: str, usage: str, sans: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """A key and a certificate signed by the CA; `usage` is serverAuth or clientAuth."""
    extensions = f"extendedKeyUsage={usage}\n"
    if sans:
        extensions += f"subjectAltName={','.join(sans)}\n"
    (pki / f"{name}.cnf").write_text(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", f"{name}.key",
             "-out", f"{name}.csr", cwd=pki)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "30", "-extfile", f"{name}.cnf", "-out", f"{name}.crt", cwd=pki)
    (pki / f"{name}.key").chmod(0o600)
    return pki / f"{name}.crt", pki / f"{name}.key"


def generate_pki(pki: Path) -> None:
    """The CA, the apiserver's serving and kubelet-client certificates, the service-account key."""
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=coai-e2e-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=pki)
    issue(pki, "apiserver", "/CN=kube-apiserver", "serverAuth", APISERVER_SANS)
    # system:masters is what kubeadm gives the apiserver for calling kubelets (logs, exec, port-forward).
    issue(pki, "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", "clientAuth")
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    for key in pki.glob("*.key"):
        key.chmod(0o600)
