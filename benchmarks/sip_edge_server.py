"""The SIP/RTP edge alone in its own process, every call in echo test mode, for benchmarks/sip_capacity.py.

Runs `SipEdge` on uvloop with a router that admits every call to `echo_call`, prints the SIP port it bound
on stdout (one line) once it listens, and serves until SIGTERM or SIGINT. With ``--stats PATH`` it appends
one JSON line per call at hang-up: when the handler started and ended (wall clock, so the caller can rebuild
how many calls were up at any moment) and the leg's `media_stats()` (packets both ways, pacing lateness).
Running in its own process lets the benchmark read this process's CPU time alone from /proc.

    .venv/bin/python benchmarks/sip_edge_server.py [--host 127.0.0.1] [--rtp-ports 30000-31000] [--stats calls.jsonl]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from telephony.call import SipCallLeg
from telephony.echo import echo_call
from telephony.edge import Admit, EdgeConfig, Refuse, SipEdge
from telephony.sip.ua_types import CallInfo


def port_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    return int(low), int(high)


async def serve(args: argparse.Namespace, stats: TextIO | None) -> None:

    async def echo(leg: SipCallLeg) -> None:
        started = time.time()
        try:
            await echo_call(leg, max_seconds=args.max_seconds)
        finally:
            if stats is not None:
                line = {"call_id": leg.call_id, "started": started, "ended": time.time(), **asdict(leg.media_stats())}
                stats.write(json.dumps(line) + "\n")

    async def router(info: CallInfo) -> Admit | Refuse:
        return Admit(echo)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    config = EdgeConfig(bind_host=args.host, sip_port=args.sip_port, rtp_ports=args.rtp_ports, max_calls=args.max_calls)
    async with SipEdge(config, router) as edge:
        print(edge.port, flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--sip-port", type=int, default=0, help="0: any free port (printed on stdout)")
    parser.add_argument("--rtp-ports", type=port_range, default=(30000, 31000), help="LOW-HIGH, two per call")
    parser.add_argument("--max-calls", type=int, default=500)
    parser.add_argument("--max-seconds", type=float, default=600.0, help="echo calls hang up after this")
    parser.add_argument("--stats", default="", help="append one JSON line of media stats per call here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.ExitStack() as files:
        stats = files.enter_context(open(args.stats, "a", buffering=1)) if args.stats else None
        uvloop.run(serve(args, stats))


if __name__ == "__main__":
    main()
