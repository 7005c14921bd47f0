"""localstripe, a stateful Stripe emulator, on loopback, for the payment tests.

    python localstripe_server.py [--port N] [--watch-stdin]

localstripe's own command (`localstripe --port N`) listens on every address
and keeps its objects in /tmp/localstripe.pickle, one file for every instance
on the machine, which tests running side by side would share. This starts the
same application (localstripe.server.app, unchanged) on 127.0.0.1 only (port
0, the default, picks a free one), keeps its objects in memory only, checks
that it answers an authenticated request, and prints one line on standard
output:

    listening http://127.0.0.1:PORT

then serves Stripe's REST API (any secret key starting `sk_`) and
localstripe's `/_config` routes until killed. Request logs go to standard
error.
"""

import argparse
import asyncio
import logging
import os
import socket
import sys
import threading
import urllib.request

from aiohttp import web
from localstripe import resources
from localstripe.server import app


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--watch-stdin",
        action="store_true",
        help="exit when standard input closes (the parent died)",
    )
    args = parser.parse_args()

    # Objects stay in this process: nothing read from or written to /tmp.
    resources.Store.dump_to_disk = lambda self: None

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"

    logger = logging.getLogger("aiohttp.access")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(logging.StreamHandler(sys.stderr))

    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve():
        asyncio.set_event_loop(loop)

        async def start():
            runner = web.AppRunner(app, access_log=logger)
            await runner.setup()
            await web.SockSite(runner, sock).start()

        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    if not started.wait(60):
        sys.exit("localstripe did not start within 60 s")

    check = urllib.request.Request(
        f"{url}/v1/customers?limit=1",
        headers={"Authorization": "Bearer sk_test_ready"},
    )
    with urllib.request.urlopen(check, timeout=30) as answer:
        if answer.status != 200:
            sys.exit(f"localstripe answered HTTP {answer.status}")

    print(f"listening {url}", flush=True)
    if args.watch_stdin:
        sys.stdin.read()
        os._exit(0)
    threading.Event().wait()


if __name__ == "__main__":
    main()
