"""The `flowyte` command: argument parsing only; the work happens in `control_api.main`.

    flowyte serve [--host H] [--http-port P] [--database-url URL] [--data-dir DIR]
    flowyte keys create --org NAME (--scopes "a:read b:write" | --all-scopes) [--label L]
    flowyte keys list [--json]
    flowyte keys revoke ID

Settings come from the embedded defaults, then FLOWYTE_* environment variables, then these flags.
Results a script consumes (a new secret key, `keys list`) go to stdout; everything else goes to stderr.
Exit status: 0 success, 1 failure (no such key, database unreachable, port taken), 2 bad usage,
130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from alembic.util.exc import CommandError
from sqlalchemy.exc import SQLAlchemyError

from control_api import main as app_main
from control_api.auth.keys import KeyRecord
from control_api.auth.scopes import ALL_SCOPES, parse_scopes
from control_api.clock import iso
from control_api.settings import Settings, parse_port_range, parse_sip_port
from control_api.voice_edge import edge_config
from telephony.sip.admission import parse_allowlist

NAME_MAX = 200  # organizations.name and api_keys.label are String(200)


def _scopes(text: str) -> tuple[str, ...]:
    try:
        scopes = parse_scopes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{error}; known scopes: {' '.join(ALL_SCOPES)}") from None
    if not scopes:
        raise argparse.ArgumentTypeError("give at least one scope")
    return scopes


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {port}")
    return port


_OFF = -1  # --sip-port off (None means "not given" to settings_from)


def _sip_port(text: str) -> int:
    try:
        port = parse_sip_port(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return _OFF if port is None else port


def _port_range(text: str) -> tuple[int, int]:
    try:
        return parse_port_range(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _allowlist(text: str) -> str:
    try:
        parse_allowlist(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _name(text: str) -> str:
    name = text.strip()
    if not name:
        raise argparse.ArgumentTypeError("must not be empty")
    if len(name) > NAME_MAX:
        raise argparse.ArgumentTypeError(f"at most {NAME_MAX} characters")
    return name


def _label(text: str) -> str:
    return _name(text) if text.strip() else ""


def build_parser() -> argparse.ArgumentParser:
    storage = argparse.ArgumentParser(add_help=False)
    group = storage.add_argument_group("storage")
    group.add_argument(
        "--database-url",
        metavar="URL",
        help="sqlite:///PATH or postgresql://USER@HOST/DB (default: $FLOWYTE_DATABASE_URL, "
        "else a SQLite file in the data directory)",
    )
    group.add_argument(
        "--data-dir",
        metavar="DIR",
        type=Path,
        help="where embedded state lives (default: $FLOWYTE_DATA_DIR, else ./.flowyte)",
    )

    parser = argparse.ArgumentParser(prog="flowyte", description="Self-hostable real-time voice agent platform.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serving = argparse.ArgumentParser(add_help=False)
    serving.add_argument("--host", help="address to listen on (default: $FLOWYTE_HOST, else 127.0.0.1)")
    serving.add_argument(
        "--http-port",
        type=_port,
        metavar="PORT",
        help="API port; 0 picks a free one (default: $FLOWYTE_HTTP_PORT, else 8080)",
    )

    sip = serving.add_argument_group("SIP/RTP edge")
    sip.add_argument(
        "--sip-port",
        type=_sip_port,
        metavar="PORT",
        help='SIP port, UDP and TCP; 0 picks a free one, "off" runs no edge (default: $FLOWYTE_SIP_PORT, else 5060)',
    )
    sip.add_argument(
        "--rtp-ports",
        type=_port_range,
        metavar="LOW-HIGH",
        help="RTP port range, two ports per call (default: $FLOWYTE_RTP_PORTS, else 20000-20999)",
    )
    sip.add_argument(
        "--media-address",
        metavar="ADDR",
        help="address written into SDP and SIP Contact (default: $FLOWYTE_MEDIA_ADDRESS, else the --host address)",
    )
    sip.add_argument(
        "--sip-allow",
        type=_allowlist,
        metavar="CIDRS",
        help='trunk source allowlist, comma-separated CIDRs or "any" (default: $FLOWYTE_SIP_ALLOW, else loopback only)',
    )
    sip.add_argument(
        "--sip-transfer-domain",
        metavar="HOST[:PORT]",
        help="where transfers to a phone number are sent, as sip:NUMBER@HOST[:PORT] "
        "(default: $FLOWYTE_SIP_TRANSFER_DOMAIN, else the caller's own domain)",
    )
    sip.add_argument(
        "--call-mode",
        choices=("agent", "echo"),
        help='who answers calls: "agent" (the voice agent) or "echo" (a test tone, then your own voice back) '
        "(default: $FLOWYTE_CALL_MODE, else agent)",
    )

    commands.add_parser(
        "serve",
        parents=[storage, serving],
        help="run the API server and the SIP/RTP edge (migrates the database first)",
        description="Migrate the database, then serve the REST API and the SIP/RTP edge until SIGINT/SIGTERM.",
    )
    commands.add_parser(
        "demo",
        parents=[storage, serving],
        help="set up a sample agent on +14155550100 (once per data dir), then serve",
        description="Create a demo organization, key, agent (knowledge, transfer skill), publish it, import "
        "+14155550100 and assign it, print how to call and chat with it, then run the server.",
    )

    keys = commands.add_parser("keys", help="manage API keys", description="Create, list and revoke secret API keys.")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    create = key_commands.add_parser(
        "create",
        parents=[storage],
        help="create a key (and its organization if new)",
        description="Create a secret key, creating the organization if it is new. The key is printed "
        "alone on stdout, once; it cannot be shown again.",
    )
    create.add_argument("--org", required=True, type=_name, metavar="NAME", help="organization name")
    which = create.add_mutually_exclusive_group(required=True)
    which.add_argument("--scopes", type=_scopes, metavar="SCOPES", help='space- or comma-separated, e.g. "agents:read"')
    which.add_argument("--all-scopes", action="store_true", help="grant every scope")
    create.add_argument("--label", type=_label, default="", metavar="LABEL", help="a note to tell keys apart")

    listing = key_commands.add_parser(
        "list", parents=[storage], help="list keys (never their secrets)", description="List every key."
    )
    listing.add_argument("--json", action="store_true", help="print a JSON array instead of a table")

    revoke = key_commands.add_parser(
        "revoke",
        parents=[storage],
        help="revoke a key",
        description="Revoke a key; it stops working at once.",
    )
    revoke.add_argument("key_id", metavar="ID", help="the key's id (key_…), as `keys list` shows it")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    overrides = {
        "database_url": args.database_url,
        "data_dir": args.data_dir,
        "host": getattr(args, "host", None),
        "http_port": getattr(args, "http_port", None),
        "sip_port": getattr(args, "sip_port", None),
        "rtp_ports": getattr(args, "rtp_ports", None),
        "media_address": getattr(args, "media_address", None),
        "sip_allow": getattr(args, "sip_allow", None),
        "sip_transfer_domain": getattr(args, "sip_transfer_domain", None),
        "call_mode": getattr(args, "call_mode", None),
    }
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    settings = replace(settings, sip_port=None) if settings.sip_port == _OFF else settings
    if settings.sip_port is not None:
        edge_config(settings)  # a bad allowlist or FLOWYTE_SIP_AUTH fails here, before anything starts
    return settings


def key_json(record: KeyRecord) -> dict[str, object]:
    return {
        "id": record.id,
        "orgId": record.org_id,
        "org": record.org_name,
        "label": record.label,
        "prefix": record.prefix,
        "scopes": list(record.scopes),
        "createdAt": iso(record.created_at),
        "revokedAt": iso(record.revoked_at),
    }


def key_table(records: Sequence[KeyRecord]) -> str:
    header = ("ID", "ORG", "LABEL", "PREFIX", "SCOPES", "CREATED", "REVOKED")
    rows = [header] + [
        (
            r.id,
            r.org_name,
            r.label or "-",
            r.prefix,
            "all" if set(ALL_SCOPES) <= set(r.scopes) else " ".join(r.scopes),
            iso(r.created_at) or "-",
            iso(r.revoked_at) or "-",
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    if args.keys_command == "create":
        scopes = ALL_SCOPES if args.all_scopes else args.scopes
        record, secret = asyncio.run(
            app_main.create_api_key(settings, org_name=args.org, scopes=scopes, label=args.label)
        )
        print(f"flowyte: created key {record.id} for organization {record.org_name!r}", file=sys.stderr)
        print("flowyte: the key below is shown only once; store it now", file=sys.stderr)
        print(secret, flush=True)
        return 0
    if args.keys_command == "list":
        records = asyncio.run(app_main.list_api_keys(settings))
        if args.json:
            print(json.dumps([key_json(r) for r in records], indent=2))
        elif records:
            print(key_table(records))
        else:
            print("flowyte: no keys yet; create one with `flowyte keys create`", file=sys.stderr)
        return 0
    if args.keys_command == "revoke":
        if not asyncio.run(app_main.revoke_api_key(settings, args.key_id)):
            print(f"flowyte: error: no key with id {args.key_id!r}", file=sys.stderr)
            return 1
        print(f"flowyte: revoked key {args.key_id}", file=sys.stderr)
        return 0
    raise AssertionError(args.keys_command)


def _describe(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()  # a DBAPIError's driver error is shorter
    return text.splitlines()[0] if text else type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
    except ValueError as error:  # a malformed FLOWYTE_* variable
        parser.error(f"bad environment setting: {error}")
    try:
        if args.command == "serve":
            app_main.serve(settings)
            return 0
        if args.command == "demo":
            from control_api.demo import demo

            demo(settings)
            return 0
        return _keys(args, settings)
    except KeyboardInterrupt:
        return 130
    except (OSError, SQLAlchemyError, CommandError, RuntimeError) as error:  # RuntimeError: demo setup
        print(f"flowyte: error: {_describe(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
