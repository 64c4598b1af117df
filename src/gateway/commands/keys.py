"""`gateway keys generate` and `gateway token`: development signing keys and tokens."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

_DEFAULT_AUDIENCE = "db-gateway"  # mirrors gateway.keys; kept here so --help needs no import
_DEFAULT_ISSUER = "https://gateway.local/dev"


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="development signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    gen = keys_sub.add_parser(
        "generate", help="write DIR/signing_key.pem (0600) and DIR/jwks.json for dev tokens"
    )
    gen.add_argument("--out", required=True, metavar="DIR", help="output directory")
    gen.add_argument("--alg", default="ES256", choices=("RS256", "ES256", "EdDSA"))
    gen.add_argument("--kid", help="key id (default: RFC 7638 thumbprint of the public key)")
    gen.add_argument("--force", action="store_true", help="replace an existing key")
    gen.set_defaults(func=generate_command)

    token = sub.add_parser("token", help="mint a development JWT signed with a dev key")
    token.add_argument("--key", required=True, metavar="FILE", help="signing_key.pem")
    token.add_argument("--sub", required=True, help="subject (the user)")
    token.add_argument("--groups", default="", help="comma-separated groups, e.g. a,b")
    token.add_argument("--ttl", default="15m", help='lifetime, e.g. "15m", "1h" (default 15m)')
    token.add_argument("--aud", default=_DEFAULT_AUDIENCE, help=f"default {_DEFAULT_AUDIENCE}")
    token.add_argument("--iss", default=_DEFAULT_ISSUER, help=f"default {_DEFAULT_ISSUER}")
    token.add_argument(
        "--claim",
        action="append",
        default=[],
        metavar="K=V",
        help="extra claim; V is parsed as JSON when it can be (numbers, lists), else a string",
    )
    token.add_argument("--kid", help="key id header (default: sidecar or key thumbprint)")
    token.set_defaults(func=token_command)


def generate_command(args: argparse.Namespace) -> int:
    from gateway.keys import DEFAULT_AUDIENCE, DEFAULT_ISSUER, JWKS_NAME, generate_signing_key

    try:
        key_path = generate_signing_key(args.out, args.alg, kid=args.kid, overwrite=args.force)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    jwks_path = key_path.with_name(JWKS_NAME)
    jwk = json.loads(jwks_path.read_text("utf-8"))["keys"][0]
    print(f"wrote {key_path} (private key, mode 0600: keep it secret)")
    print(f"wrote {jwks_path} (public key: kid={jwk['kid']}, alg={jwk['alg']})")
    print("use it in the config:")
    print("  [auth]")
    print(f"  issuer = {json.dumps(DEFAULT_ISSUER)}")
    print(f"  audience = {json.dumps(DEFAULT_AUDIENCE)}")
    print(f"  jwks_file = {json.dumps(str(jwks_path))}")
    return 0


def _parse_claims(pairs: list[str]) -> dict[str, Any]:
    claims: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--claim expects K=V, got {pair!r}")
        try:
            claims[name] = json.loads(raw)
        except ValueError:
            claims[name] = raw
    return claims


def token_command(args: argparse.Namespace) -> int:
    from gateway.config import parse_duration
    from gateway.keys import mint_token

    try:
        ttl = parse_duration(args.ttl)
        groups = [g.strip() for g in args.groups.split(",") if g.strip()]
        token = mint_token(
            args.key,
            args.sub,
            groups,
            ttl,
            audience=args.aud,
            issuer=args.iss,
            extra_claims=_parse_claims(args.claim),
            kid=args.kid,
        )
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(token)
    return 0
