"""``qm auth``: tokens for the server's token file; and the connection flags every command takes.

``qm auth new-token NAME --role R --queues P…`` prints a fresh token once and the token-file entry that
holds only its SHA-256; ``qm auth hash-token`` prints the SHA-256 of a token read from standard input (or
typed at a prompt), for tokens made elsewhere. Tokens are never taken as arguments: a command line is
visible to every user of the machine and stays in shell history.

The connection flags (``--token-file``, ``--tls-ca``, ``--tls-cert``, ``--tls-key``, ``--tls-server-name``)
set the ``QM_*`` variables that `queue_manager.credentials` reads, so every client a command makes (and a
dashboard it starts) uses them. A token itself comes from ``QM_TOKEN`` or ``--token-file``.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import re
import secrets
import sys

_ROLES = ("producer", "worker", "viewer", "admin")
# The server's token file takes only these names and patterns (queue_manager_server/auth.py, which this
# package cannot import): an entry printed with anything else would stop the server from starting.
_NAME = re.compile(r"[A-Za-z0-9_.@:\-]{1,100}")
_PATTERN = re.compile(r"[A-Za-z0-9_.\-*?\[\]!]{1,200}")
# flag → environment variable it sets (queue_manager/credentials.py reads them).
CONNECTION_FLAGS = {
    "--token-file": ("QM_TOKEN_FILE", "file holding the bearer token (or set QM_TOKEN)"),
    "--tls-ca": ("QM_TLS_CA", "PEM CA bundle that signed the server's certificate (turns TLS on)"),
    "--tls-cert": ("QM_TLS_CERT", "PEM client certificate, for servers that require mutual TLS"),
    "--tls-key": ("QM_TLS_KEY", "PEM private key of --tls-cert"),
    "--tls-server-name": ("QM_TLS_SERVER_NAME", "name expected in the server's certificate"),
}


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that say how to reach a server that requires TLS or a token."""
    for flag, (env, what) in CONNECTION_FLAGS.items():
        parser.add_argument(flag, default=None, help=f"{what} [env {env}]")


def apply_connection_flags(args: argparse.Namespace) -> None:
    """Exports the given connection flags as their variables (clients and child processes read them)."""
    for flag, (env, _) in CONNECTION_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if value:
            os.environ[env] = value


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``auth`` to the ``qm`` parser."""
    auth = commands.add_parser("auth", help="make tokens for the server's token file (--auth-file)")
    sub = auth.add_subparsers(title="auth commands", metavar="COMMAND")
    new = sub.add_parser(
        "new-token",
        help="print a new random token and its token-file entry",
        description="Prints a new token (keep it secret; it is shown once) and the TOML entry to add to "
        "the server's token file, which holds only the token's SHA-256.",
    )
    new.add_argument(
        "name",
        type=_token_name,
        help="the token's name in logs and in the token file (1-100 of A-Z a-z 0-9 - _ . @ :)",
    )
    new.add_argument(
        "--role", action="append", choices=_ROLES, required=True, help="role (repeat for several)"
    )
    new.add_argument(
        "--queues",
        nargs="+",
        type=_queue_pattern,
        default=["*"],
        help="queue-name patterns (fnmatch globs; default '*': every queue)",
    )
    new.set_defaults(command="auth", handler=_cmd_new_token)
    hashed = sub.add_parser(
        "hash-token",
        help="print the SHA-256 of a token read from standard input",
        description="Reads a token from standard input (or asks for it at a terminal) and prints the "
        "SHA-256 the token file's sha256 field takes.",
    )
    hashed.set_defaults(command="auth", handler=_cmd_hash_token)


def _token_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"must be 1-100 letters, digits and - _ . @ : (the token file takes no other), got {value!r}"
        )
    return value


def _queue_pattern(value: str) -> str:
    if not _PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError(
            "must be a queue-name pattern of 1-200 letters, digits, - _ . and the globs * ? [ ] ! "
            f"(such as 'billing-*'), got {value!r}"
        )
    return value


def _entry(name: str, digest: str, roles: list[str], queues: list[str]) -> str:
    role = f"role = {json.dumps(roles[0])}" if len(roles) == 1 else f"roles = {json.dumps(roles)}"
    return (
        f"[[tokens]]\nname = {json.dumps(name)}\nsha256 = {json.dumps(digest)}\n{role}\n"
        f"queues = {json.dumps(queues)}\n"
    )


def _cmd_new_token(args: argparse.Namespace) -> int:
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    roles = list(dict.fromkeys(args.role))
    print(f"# token (shown once; give it to the client as QM_TOKEN or in a --token-file):\n# {token}")
    print("# entry for the server's token file:")
    print(_entry(args.name, digest, roles, list(args.queues)), end="")
    return 0


def _cmd_hash_token(args: argparse.Namespace) -> int:
    token = getpass.getpass("token: ") if sys.stdin.isatty() else sys.stdin.readline()
    token = token.strip()
    if not token:
        print("qm auth hash-token: no token on standard input", file=sys.stderr)
        return 2
    print(hashlib.sha256(token.encode()).hexdigest())
    return 0
