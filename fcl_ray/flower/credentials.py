"""TLS certificates and SuperNode authentication keys for a Flower deployment.

Made with ``cryptography`` (already a dependency of MLflow and Flower): a private CA, the
SuperLink's server certificate signed by it (its host names and addresses as SANs), and one
EC key pair per site, in the OpenSSH format ``flwr supernode register`` and
``flower-supernode --auth-supernode-private-key`` read. For a pilot or a test; a consortium
with its own PKI hands its certificates to the same flags instead.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALIDITY_DAYS = 365


@dataclass(frozen=True)
class Credentials:
    """Where :func:`make_credentials` wrote each file."""
    ca_cert: Path          # every party: verifies the SuperLink's certificate
    ca_key: Path           # stays with whoever issues certificates (not the SuperLink)
    server_cert: Path      # SuperLink only
    server_key: Path       # SuperLink only
    site_keys: list[Path]  # site i: its private key (never leaves the site)
    site_public_keys: list[Path]   # registered at the SuperLink


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fcl-ray federation"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: x509.Name, issuer: x509.Name, public_key, signing_key,
                 extensions: list[tuple[x509.ExtensionType, bool]]) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS)))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    """Each host as an IP address SAN if it is one, else as a DNS name."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if private:   # a private key: readable by its owner only
        os.chmod(path, 0o600)
    return path


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def make_credentials(out: Path, server_hosts: list[str], sites: int) -> Credentials:
    """A CA, the SuperLink's certificate for ``server_hosts`` and ``sites`` SuperNode key
    pairs under ``out`` (``certificates/`` and ``keys/``)."""
    certs, keys = Path(out) / "certificates", Path(out) / "keys"
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("fcl-ray federation CA")
    ca_cert = _certificate(ca_name, ca_name, ca_key.public_key(), ca_key,
                           [(x509.BasicConstraints(ca=True, path_length=0), True),
                            (x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                           crl_sign=True, content_commitment=False,
                                           key_encipherment=False, data_encipherment=False,
                                           key_agreement=False, encipher_only=False,
                                           decipher_only=False), True)])
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _certificate(_name(server_hosts[0]), ca_name, server_key.public_key(), ca_key,
                               [(x509.BasicConstraints(ca=False, path_length=None), True),
                                (_san(server_hosts), False)])
    site_keys, site_public = [], []
    for site in range(sites):
        key = ec.generate_private_key(ec.SECP384R1())
        site_keys.append(_write(keys / f"site-{site}", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption()), private=True))
        site_public.append(_write(keys / f"site-{site}.pub", key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)))
    return Credentials(
        ca_cert=_write(certs / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM)),
        ca_key=_write(certs / "ca.key", _pem_key(ca_key), private=True),
        server_cert=_write(certs / "server.pem",
                           server_cert.public_bytes(serialization.Encoding.PEM)),
        server_key=_write(certs / "server.key", _pem_key(server_key), private=True),
        site_keys=site_keys, site_public_keys=site_public)
