"""Run the fake API in the foreground: ``python -m tests.fakeapi --port 8765 [--latency-ms 50] ...``.

Once serving, prints one line ``FAKEAPI_READY {json}`` (port, base URLs) to stdout, so a parent
process can wait for readiness by reading a line instead of sleeping. ``--port 0`` picks a free
port. Stops on SIGINT/SIGTERM. Stats and knobs are reachable at ``/_stats`` and ``/_config``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence

from .server import FakeAPIServer
from .state import Faults


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.fakeapi",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 = any free port")
    p.add_argument("--api-key", default="test-key")
    p.add_argument("--latency-ms", type=float, default=0.0)
    for name in ("rate-limit", "server-error", "timeout", "malformed", "out-of-range"):
        p.add_argument(f"--{name}", type=float, default=0.0, metavar="P", help=f"{name} fault probability")
    p.add_argument("--hang-s", type=float, default=5.0)
    p.add_argument("--retry-after-s", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--control-plane-faults",
        action="store_true",
        help="also inject transport faults into files/batches endpoints",
    )
    p.add_argument("--batch-polls", type=int, default=1, help="retrieves until a batch completes")
    p.add_argument("--batch-request-error-rate", type=float, default=0.0)
    p.add_argument("--expire-next-batches", type=int, default=0)
    p.add_argument("--fail-next-batches", type=int, default=0)
    p.add_argument("--quota-exhausted", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    faults = Faults(
        rate_limit=args.rate_limit,
        server_error=args.server_error,
        timeout=args.timeout,
        malformed=args.malformed,
        out_of_range=args.out_of_range,
        hang_s=args.hang_s,
        seed=args.seed,
        retry_after_s=args.retry_after_s,
        control_plane=args.control_plane_faults,
    )
    server = FakeAPIServer(
        latency_s=args.latency_ms / 1000,
        faults=faults,
        api_key=args.api_key,
        batch_polls_to_complete=args.batch_polls,
        quota_exhausted=args.quota_exhausted,
        host=args.host,
        port=args.port,
    )
    server.configure(
        batch_request_error_rate=args.batch_request_error_rate,
        expire_next_batches=args.expire_next_batches,
        fail_next_batches=args.fail_next_batches,
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with server:
        info = {
            "port": server.port,
            "openai_base_url": server.openai_base_url,
            "anthropic_base_url": server.anthropic_base_url,
            "api_key": server.api_key,
        }
        print("FAKEAPI_READY " + json.dumps(info), flush=True)
        done.wait()
    print(f"FAKEAPI_STOPPED {json.dumps(server.stats.as_dict())}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
