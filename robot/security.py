"""CURVE keys for the robot link: who may command the robot over the network.

The server holds one key pair and a list of allowed client public keys; a client holds its
own key pair and the server's public key. Keys are ZeroMQ certificate files (Z85 text), as
written by `zmq.auth.create_certificates`:

    keys/server.key            server public key   (give to clients)
    keys/server.key_secret     server secret key   (stays on the robot)
    keys/clients/<name>.key    allowed client public keys
    keys/<name>.key_secret     a client's key pair (stays with that client)
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

import zmq.auth


@dataclass(frozen=True)
class ServerKeys:
    public: bytes  # Z85, 40 bytes
    secret: bytes
    allowed_clients: frozenset[bytes] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if len(self.public) != 40 or len(self.secret) != 40:
            raise ValueError("CURVE keys must be 40-character Z85 strings")
        if not self.allowed_clients:
            raise ValueError("CURVE needs at least one allowed client public key")


@dataclass(frozen=True)
class ClientKeys:
    server_public: bytes
    public: bytes
    secret: bytes


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a hostname, an interface name or "*": reachable from outside
        return False


def make_keys(directory: str | Path, client_names: tuple[str, ...] = ("workbench",)) -> Path:
    """Write a server key pair and one key pair per client, each client allowed by the server."""
    d = Path(directory)
    (d / "clients").mkdir(parents=True, exist_ok=True)
    zmq.auth.create_certificates(d, "server")
    for name in client_names:
        public_file, _ = zmq.auth.create_certificates(d, name)
        Path(public_file).replace(d / "clients" / f"{name}.key")
    return d


def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    if not path.exists():
        raise FileNotFoundError(f"key file {path} not found")
    public, sec = zmq.auth.load_certificate(path)
    if secret and sec is None:
        raise ValueError(f"{path} holds no secret key")
    return public, sec


def load_server_keys(directory: str | Path) -> ServerKeys:
    d = Path(directory)
    public, secret = _load(d / "server.key_secret", secret=True)
    allowed = frozenset(_load(p, secret=False)[0] for p in sorted((d / "clients").glob("*.key")))
    return ServerKeys(public=public, secret=secret, allowed_clients=allowed)


def load_client_keys(directory: str | Path, name: str = "workbench") -> ClientKeys:
    d = Path(directory)
    server_public, _ = _load(d / "server.key", secret=False)
    public, secret = _load(d / f"{name}.key_secret", secret=True)
    return ClientKeys(server_public=server_public, public=public, secret=secret)
