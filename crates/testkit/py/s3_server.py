"""An S3-compatible object store on loopback, for the artifact-store tests.

    python s3_server.py --bucket NAME [--port N] [--watch-stdin]

Backed by moto's S3 implementation, held in memory. It listens on 127.0.0.1
only (port 0, the default, picks a free one), creates the bucket, and prints
one line on standard output:

    listening http://127.0.0.1:PORT

then serves the S3 REST API (path-style URLs: /BUCKET/KEY) until killed. It
accepts any access key and any signature: it checks the protocol, not who
speaks it. Request logs go to standard error.
"""

import argparse
import os
import sys
import threading
import urllib.request

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--watch-stdin",
        action="store_true",
        help="exit when standard input closes (the parent died)",
    )
    args = parser.parse_args()

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", args.port, app, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()

    created = urllib.request.urlopen(
        urllib.request.Request(f"{url}/{args.bucket}", method="PUT")
    )
    if created.status != 200:
        sys.exit(f"creating bucket {args.bucket}: HTTP {created.status}")

    print(f"listening {url}", flush=True)
    if args.watch_stdin:
        sys.stdin.read()
        os._exit(0)
    threading.Event().wait()


if __name__ == "__main__":
    main()
