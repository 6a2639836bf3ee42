"""Where the daemon is and how to reach it: the target and token (arguments, else the environment
variables the `autoquant` CLI reads too), TLS settings, and the channel built from them."""
import dataclasses
import os
import pathlib
from typing import Mapping, Optional, Union

import grpc

PemSource = Union[bytes, str, os.PathLike]
ENV_SERVER = "AUTOQUANT_SERVER"
ENV_TOKEN_FILE = "AUTOQUANT_TOKEN_FILE"


def _pem(value: Optional[PemSource]) -> Optional[bytes]:
    """PEM bytes as given, or read from a path."""
    if value is None or isinstance(value, bytes):
        return value
    return pathlib.Path(value).read_bytes()


@dataclasses.dataclass
class TLS:
    """root_cert: the CA that signed the daemon's --tls-cert (None: the system's roots).
    client_key / client_cert: presented to a daemon started with --tls-client-ca (mTLS).
    Each is PEM bytes or a path to a PEM file."""
    root_cert: Optional[PemSource] = None
    client_key: Optional[PemSource] = None
    client_cert: Optional[PemSource] = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.client_key is None) != (self.client_cert is None):
            raise ValueError("TLS: give both client_key and client_cert, or neither")
        return grpc.ssl_channel_credentials(_pem(self.root_cert), _pem(self.client_key), _pem(self.client_cert))


def resolve_target(target: Optional[str]) -> str:
    target = target or os.environ.get(ENV_SERVER)
    if not target:
        raise ValueError(f"no daemon address: pass target='host:port' or set {ENV_SERVER}")
    return target


def resolve_token(token: Optional[str]) -> Optional[str]:
    """The token given, else the first line of $AUTOQUANT_TOKEN_FILE (as the daemon reads --token-file)."""
    if token is not None:
        return token
    path = os.environ.get(ENV_TOKEN_FILE)
    if not path:
        return None
    text = pathlib.Path(path).read_text().strip()
    if not text:
        raise ValueError(f"{ENV_TOKEN_FILE}={path} is empty")
    return text.splitlines()[0].strip()


def make_channel(target: str, tls: Union[TLS, Mapping, None]) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(target)
    if not isinstance(tls, TLS):
        tls = TLS(**tls)
    return grpc.secure_channel(target, tls.credentials())
