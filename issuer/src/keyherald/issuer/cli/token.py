"""``keyherald token CLIENT_ID --secret-file FILE``: an access token by hand, for curl and tests.

It asks the issuer's token endpoint, as any client would (client_secret_basic), and prints
the access token alone on standard output, so ``$(keyherald token ...)`` and ``> token.txt``
work. The secret never comes from argv, where the process list and the shell history would
keep it: a file, or ``-`` for standard input. The file may hold the secret alone, or the JSON
that ``keyherald clients create --json`` printed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from typing import Any
from urllib.parse import quote_plus, urlencode

from ._common import OperationFailed, add_parser

__all__ = ["read_secret", "register", "token_url"]


def register(sub: Any) -> None:
    token = add_parser(
        sub, "token", "get an access token from the issuer's token endpoint and print it alone",
        epilog="The token URL: --token-url, else KEYHERALD_TOKEN_URL (keyherald dev writes it to its env file), "
               "else KEYHERALD_ISSUER + /token.",
        allow_abbrev=False,  # --secret must not pass for --secret-file: a secret is no path
    )
    token.add_argument("client_id", metavar="CLIENT_ID")
    token.add_argument("--secret-file", required=True, metavar="FILE",
                       help="the client's secret, or the JSON of 'clients create --json'; '-' reads standard input")
    token.add_argument("--audience", action="append", default=[], metavar="AUD",
                       help="the audience to ask for (repeat for several); none: the client's only one")
    token.add_argument("--scope", action="append", default=[], metavar="SCOPE",
                       help="a scope to ask for (repeat for several); none: all of the client's scopes")
    token.add_argument("--token-url", metavar="URL", help="the token endpoint (KEYHERALD_TOKEN_URL)")
    token.add_argument("--json", action="store_true", help="print the token endpoint's whole JSON answer")
    token.set_defaults(handler=_token)


def read_secret(source: str, client_id: str) -> str:
    """The secret from a file or standard input: its text, or the JSON credentials' secret."""
    text = sys.stdin.read() if source == "-" else _read_file(source)
    text = text.strip()
    if text.startswith("{"):
        try:
            credentials = json.loads(text)
        except ValueError:
            raise ValueError("--secret-file holds neither a secret nor JSON credentials") from None
        if credentials.get("client_id", client_id) != client_id:
            raise ValueError(f"--secret-file holds the credentials of {credentials.get('client_id')!r}, not"
                             f" {client_id!r}")
        text = str(credentials.get("client_secret", ""))
    if not text or "\n" in text:
        raise ValueError("--secret-file must hold the client's secret (one line)")
    return text


def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read(64 * 1024)
    except OSError as exc:
        # The path is not echoed: a secret given where a path belongs must not reach a log.
        raise ValueError(f"--secret-file: cannot read it ({exc.strerror or type(exc).__name__})") from None


def token_url(flag: str | None) -> str:
    if flag:
        return flag
    if os.environ.get("KEYHERALD_TOKEN_URL"):
        return os.environ["KEYHERALD_TOKEN_URL"]
    from keyherald.shared.settings import load_settings

    from ..settings import IssuerSettings

    return load_settings(IssuerSettings).issuer.rstrip("/") + "/token"


def _ask(url: str, client_id: str, secret: str, form: list[tuple[str, str]]) -> dict[str, Any]:
    from urllib.error import HTTPError, URLError
    from urllib.request import Request, urlopen

    if not url.startswith(("http://", "https://")):
        raise ValueError(f"the token URL must be http(s): {url!r}")
    basic = base64.b64encode(f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()).decode()  # RFC 6749 §2.3.1
    request = Request(url, data=urlencode(form).encode(), method="POST", headers={  # noqa: S310 (checked above)
        "Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json",
    })
    try:
        with urlopen(request, timeout=10) as response:  # noqa: S310
            body: dict[str, Any] = json.loads(response.read(1024 * 1024))
            return body
    except HTTPError as exc:
        try:
            error = json.loads(exc.read(64 * 1024))
            reason = f"{error['error']} ({error.get('error_description', '')})"
        except (ValueError, KeyError, TypeError):
            reason = f"HTTP {exc.code}"
        raise OperationFailed(f"the token endpoint refused: {reason}") from None
    except (URLError, TimeoutError, OSError) as exc:
        why = getattr(exc, "reason", exc)
        raise OperationFailed(f"cannot reach the token endpoint {url} ({why}); is the issuer running?") from None


async def _token(args: argparse.Namespace) -> int:
    secret = read_secret(args.secret_file, args.client_id)
    url = token_url(args.token_url)
    form = [("grant_type", "client_credentials"), *(("audience", a) for a in args.audience)]
    if args.scope:
        form.append(("scope", " ".join(args.scope)))
    answer = _ask(url, args.client_id, secret, form)
    token = answer.get("access_token")
    if not isinstance(token, str):
        raise OperationFailed("the token endpoint's answer holds no access_token")
    if args.json:
        json.dump(answer, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(token)
    return 0
