"""API keys and TLS from the client's side, against real nodes: the key sent as
metadata (sync and asyncio), the server's refusals as typed errors, TLS with a CA of
the test's own (certificates made here with `cryptography`), plaintext refused by a
TLS node, client certificates, and the client-side checks of the arguments."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest

import shoal
from conftest import Node

ADMIN = "admin-key-of-the-python-tests"
RO = "read-only-key-of-the-python-tests"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(tmp_path_factory.mktemp("secured") / "data",
             ["--admin-api-key", ADMIN, "--read-only-api-key", RO]).start()
    yield n
    n.kill()


def test_api_keys_and_their_roles(secured: Node, name: str) -> None:
    url = secured.address
    with shoal.Client(url, retry=None) as anonymous:
        with pytest.raises(shoal.Unauthenticated) as e:
            anonymous.list_collections()
        assert "credential" in e.value.message
    with shoal.Client(url, api_key="not-a-key-of-this-server", retry=None) as wrong:
        with pytest.raises(shoal.Unauthenticated):
            wrong.count(name)
    with shoal.Client(url, api_key=ADMIN) as admin, shoal.Client(url, api_key=RO) as ro:
        with pytest.raises(shoal.PermissionDenied) as d:
            ro.create_collection(name, dim=2)
        assert "admin role" in d.value.message and RO not in d.value.message
        admin.create_collection(name, dim=2, metric="L2")
        admin.upsert(name, ids=[1, 2], vectors=[[1, 0], [0, 1]])
        assert ro.count(name, consistency="strong") == 2
        assert ro.search(name, [1, 0], top_k=1)[0].id == 1
        with pytest.raises(shoal.PermissionDenied) as d:
            ro.upsert(name, ids=[3], vectors=[[1, 1]])
        assert "read-only" in d.value.message
        assert admin.count(name, consistency="strong") == 2
        # The key travels with the async twin too.
        import asyncio

        async def twin() -> int:
            async with ro.async_client() as a:
                return await a.count(name)

        assert asyncio.run(twin()) == 2
        admin.delete_collection(name)


async def test_async_client_sends_its_api_key(secured: Node) -> None:
    async with shoal.AsyncClient(secured.address, api_key=RO) as ro:
        assert isinstance(await ro.list_collections(), list)
        with pytest.raises(shoal.PermissionDenied):
            await ro.create_collection("nope", dim=2)
    async with shoal.AsyncClient(secured.address, retry=None) as anonymous:
        with pytest.raises(shoal.Unauthenticated):
            await anonymous.list_collections()


# ---- TLS ----

def _certificates(base: Path) -> Dict[str, Path]:
    """A CA, a server certificate for localhost and 127.0.0.1, a client certificate,
    and a certificate of a CA the server does not know: PEM files under `base`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def builder(subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=1)))

    def ca(cn: str) -> Tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (builder(cn, name(cn), key.public_key())
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                             crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return key, cert

    def leaf(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, cn: str,
             usage: x509.ObjectIdentifier) -> Tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        cert = (builder(cn, ca_cert.subject, key.public_key())
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(san, critical=False)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        return key, cert

    files: Dict[str, Path] = {}

    def write(label: str, obj: object) -> None:
        path = base / f"{label}.pem"
        if isinstance(obj, x509.Certificate):
            path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
        else:
            path.write_bytes(obj.private_bytes(serialization.Encoding.PEM,  # type: ignore[attr-defined]
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        files[label] = path

    ca_key, ca_cert = ca("python tests CA")
    write("ca", ca_cert)
    server_key, server_cert = leaf(ca_key, ca_cert, "shoal node", ExtendedKeyUsageOID.SERVER_AUTH)
    write("server", server_cert)
    write("server-key", server_key)
    client_key, client_cert = leaf(ca_key, ca_cert, "python client", ExtendedKeyUsageOID.CLIENT_AUTH)
    write("client", client_cert)
    write("client-key", client_key)
    stranger_key, stranger_cert = ca("stranger CA")
    write("stranger", stranger_cert)
    return files


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    pytest.importorskip("cryptography")
    return _certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory, certs: Dict[str, Path]) -> Iterator[Node]:
    n = Node(tmp_path_factory.mktemp("tls") / "data",
             ["--tls-cert", str(certs["server"]), "--tls-key", str(certs["server-key"]),
              "--admin-api-key", ADMIN]).start()
    yield n
    n.kill()


def test_tls_with_api_key_and_plaintext_refused(tls_node: Node, certs: Dict[str, Path], name: str) -> None:
    https = f"https://{tls_node.address}"
    # The CA as a path, as PEM bytes; the server name given or taken from the address.
    with shoal.Client(https, api_key=ADMIN, root_certificates=str(certs["ca"]), tls_server_name="localhost") as c:
        c.create_collection(name, dim=2)
        assert name in [i.name for i in c.list_collections()]
    with shoal.Client(tls_node.address, tls=True, api_key=ADMIN, root_certificates=certs["ca"].read_bytes()) as c:
        assert c.count(name) == 0
        c.delete_collection(name)
    # TLS but no key: refused by authentication, not by TLS.
    with shoal.Client(https, root_certificates=certs["ca"], retry=None) as c:
        with pytest.raises(shoal.Unauthenticated):
            c.list_collections()
    # A CA the client does not trust, and plaintext: the connection fails.
    with shoal.Client(https, api_key=ADMIN, root_certificates=certs["stranger"], retry=None, timeout=10) as c:
        with pytest.raises((shoal.Unavailable, shoal.DeadlineExceeded)):
            c.list_collections()
    with shoal.Client(tls_node.address, api_key=ADMIN, retry=None, timeout=10) as c:
        with pytest.raises((shoal.Unavailable, shoal.DeadlineExceeded)):
            c.list_collections()


async def test_async_client_over_tls(tls_node: Node, certs: Dict[str, Path]) -> None:
    async with shoal.AsyncClient(f"https://{tls_node.address}", api_key=ADMIN, root_certificates=certs["ca"],
                                 tls_server_name="localhost") as c:
        assert isinstance(await c.list_collections(), list)


def test_client_certificates(tmp_path_factory: pytest.TempPathFactory, certs: Dict[str, Path]) -> None:
    n = Node(tmp_path_factory.mktemp("mtls") / "data",
             ["--tls-cert", str(certs["server"]), "--tls-key", str(certs["server-key"]),
              "--tls-client-ca", str(certs["ca"])]).start()
    try:
        https = f"https://{n.address}"
        with shoal.Client(https, root_certificates=certs["ca"], client_certificate=certs["client"],
                          client_key=certs["client-key"]) as c:
            assert isinstance(c.list_collections(), list)
        with shoal.Client(https, root_certificates=certs["ca"], retry=None, timeout=10) as c:
            with pytest.raises((shoal.Unavailable, shoal.DeadlineExceeded)):
                c.list_collections()
    finally:
        n.kill()


def test_security_arguments_are_checked_before_connecting() -> None:
    for kwargs in [
        dict(url="https://h:1", tls=False),
        dict(url="http://h:1", tls=True),
        dict(url=["https://a:1", "http://b:2"]),
        dict(url="h:1", api_key="has a space"),
        dict(url="h:1", api_key=""),
        dict(url="h:1", api_key="k" * 20, metadata=[("authorization", "Bearer x")]),
        dict(url="h:1", client_certificate=b"-----BEGIN CERTIFICATE-----"),
        dict(url="h:1", root_certificates="/no/such/ca.pem"),
        dict(url="h:1", api_key="k" * 20, native=True),
        dict(url="https://h:1", native=True),
    ]:
        with pytest.raises(ValueError):
            shoal.Client(**kwargs)  # type: ignore[arg-type]
    # Never the key in a repr.
    c = shoal.Client("h:1", api_key="secret-key-0123456789")
    assert "secret-key" not in repr(c)
    c.close()
