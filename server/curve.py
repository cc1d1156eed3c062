"""CurveZMQ for the daemon: key files, and the authenticator that admits only known clients.

Keys are ZeroMQ certificate files as `zmq.auth.create_certificates` writes them (`msldm
keys` calls it): `<name>.key` holds the public key, `<name>.key_secret` both keys. The
daemon reads its own `.key_secret` (`--curve-secret-key`) and a folder of the clients'
public `.key` files (`--curve-clients`); a client whose key is not in that folder fails
the handshake and is never served. The folder is read once, at start-up.
"""

from __future__ import annotations

import logging
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger(__name__)
ZAP_DOMAIN = "msldm"


def load_secret_key(path: Path) -> bytes:
    """The z85 secret key of a `.key_secret` certificate file. Raises ValueError."""
    try:
        _, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the CurveZMQ certificate {path}: {e}") from None
    if secret is None:
        raise ValueError(f"{path} holds no secret key (use the '.key_secret' file)")
    return secret


def load_public_key(path: Path) -> bytes:
    """The z85 public key of a `.key` or `.key_secret` certificate file. Raises ValueError."""
    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the CurveZMQ certificate {path}: {e}") from None
    return public


def check_client_folder(folder: Path) -> int:
    """Number of public keys (`*.key`) in `folder`; ValueError when it is missing or has none."""
    if not Path(folder).is_dir():
        raise ValueError(f"--curve-clients {folder} is not a folder")
    n = len(list(Path(folder).glob("*.key")))
    if n == 0:
        raise ValueError(f"--curve-clients {folder} holds no client public keys (*.key files); "
                         "make them with `msldm keys --name <client>`")
    return n


def start_authenticator(ctx: zmq.Context, clients: Path) -> ThreadAuthenticator:
    """A started ZAP handler on `ctx` that admits CURVE clients whose public key is one of
    the `*.key` files in `clients`. Stop it (`.stop()`) before terminating `ctx`."""
    n = check_client_folder(clients)
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("server.curve.zap"))
    auth.start()
    auth.configure_curve(domain=ZAP_DOMAIN, location=str(clients))
    log.info("CurveZMQ: %d allowed client key(s) in %s", n, clients)
    return auth


def make_keys(folder: Path, name: str) -> tuple[Path, Path]:
    """Write `<folder>/<name>.key` (public) and `<name>.key_secret` (both keys); refuses to
    overwrite. Returns the two paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    if public.exists() or secret.exists():
        raise ValueError(f"{public} or {secret} already exists; not overwriting keys")
    pub, sec = zmq.auth.create_certificates(str(folder), name)
    Path(sec).chmod(0o600)
    return Path(pub), Path(sec)
