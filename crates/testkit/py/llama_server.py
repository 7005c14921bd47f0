"""Runs llama.cpp's OpenAI-compatible HTTP server on a GGUF model, in-process.

    python llama_server.py MODEL.gguf [--port N] [--alias NAME] [--ctx N] [--threads N]
                           [--parallel N] [--watch-stdin]

The server listens on 127.0.0.1 only (port 0, the default, picks a free one).
Once the model is loaded and the server accepts requests, one line is printed
on standard output:

    listening http://127.0.0.1:PORT

and the process then serves until it is killed. Logs go to standard error.
"""

import argparse
import os
import sys
import threading

import xllamacpp


def exit_on_stdin_eof():
    def watch():
        while sys.stdin.buffer.read(4096):
            pass
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="path of the .gguf model")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--alias", default=None, help="model name the server reports")
    parser.add_argument("--ctx", type=int, default=2048, help="context size in tokens")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--parallel", type=int, default=2, help="requests served at once")
    parser.add_argument(
        "--watch-stdin",
        action="store_true",
        help="exit when standard input closes, so the server never outlives its parent",
    )
    args = parser.parse_args()
    if args.watch_stdin:
        exit_on_stdin_eof()

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    if args.alias:
        params.model_alias = {args.alias}
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_ctx = args.ctx
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.n_gpu_layers = 0
    params.ui = False
    params.warmup = False

    # Returns once the model is loaded and the HTTP server runs on its own thread.
    server = xllamacpp.Server(params)
    print(f"listening {server.listening_address}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    sys.exit(main())
