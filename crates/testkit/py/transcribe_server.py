"""A speech-to-text server speaking OpenAI's transcription API, on loopback.

    python transcribe_server.py [--port N] [--model NAME ...] [--watch-stdin]

Backed by PocketSphinx and the US English model bundled with it: no GPU, no
download. It listens on 127.0.0.1 only (port 0, the default, picks a free one)
and, once the model is loaded, prints one line on standard output:

    listening http://127.0.0.1:PORT

then serves until killed. Request logs go to standard error.

    POST /v1/audio/transcriptions   multipart/form-data:
        file             a WAV file (PCM 8/16/24/32-bit or float, any rate, any channels)
        model            one of the --model names (default: pocketsphinx-en-us)
        language         optional; only "en" (or an "en-..." tag) is accepted
        response_format  optional; "json" (default), "text" or "verbose_json"
        prompt, temperature   accepted and ignored
    -> 200 {"text": "..."}   ("text" format: the text alone, text/plain)
    -> 4xx {"error": {"message", "type", "param", "code"}} on a bad request

    GET /health -> {"status": "ok"};  GET /v1/models -> the model list.
"""

import argparse
import email.parser
import email.policy
import json
import os
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from pocketsphinx import Decoder

MODEL_RATE = 16000
MAX_UPLOAD = 25 * 1024 * 1024  # OpenAI's limit
EDGE_SILENCE_S = 0.25
NOISE_RMS = 30.0  # about -60 dBFS


class BadRequest(Exception):
    def __init__(self, message, param=None, code=None, status=400):
        super().__init__(message)
        self.param, self.code, self.status = param, code, status


def read_wav(data):
    """Samples of a RIFF/WAVE file as float64 mono in [-32768, 32767], and its rate.

    Tolerates streamed files whose size fields are placeholders: a chunk size
    larger than what is left means "up to the end".
    """
    if len(data) < 12 or data[0:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise BadRequest("the file is not a WAV (RIFF/WAVE) file", "file", "invalid_file")
    fmt, at = None, 12
    while at + 8 <= len(data):
        chunk, size = data[at:at + 4], struct.unpack("<I", data[at + 4:at + 8])[0]
        body = data[at + 8:min(at + 8 + size, len(data))]
        if chunk == b"fmt ":
            if len(body) < 16:
                raise BadRequest("the WAV format chunk is too short", "file", "invalid_file")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, channels, rate, bits)
        elif chunk == b"data":
            if fmt is None:
                raise BadRequest("the WAV file has no format chunk", "file", "invalid_file")
            return decode_pcm(body, *fmt)
        at += 8 + size + (size % 2)
    raise BadRequest("the WAV file has no data chunk", "file", "invalid_file")


def decode_pcm(body, tag, channels, rate, bits):
    if channels < 1 or not 1000 <= rate <= 384000:
        raise BadRequest("the WAV file has no usable channel count or rate", "file", "invalid_file")
    if tag == 1 and bits in (8, 16, 24, 32):
        width = bits // 8
        body = body[: len(body) // (width * channels) * width * channels]
        if bits == 8:
            x = (np.frombuffer(body, np.uint8).astype(np.float64) - 128.0) * 256.0
        elif bits == 24:
            b = np.frombuffer(body, np.uint8).reshape(-1, 3).astype(np.int32)
            x = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8).astype(np.float64) / 256.0
        else:
            x = np.frombuffer(body, "<i2" if bits == 16 else "<i4").astype(np.float64)
            if bits == 32:
                x /= 65536.0
    elif tag == 3 and bits in (32, 64):
        width = bits // 8
        body = body[: len(body) // (width * channels) * width * channels]
        x = np.frombuffer(body, "<f4" if bits == 32 else "<f8").astype(np.float64) * 32767.0
    else:
        raise BadRequest(
            f"unsupported WAV encoding (format {tag}, {bits} bits): send PCM or float",
            "file",
            "invalid_file",
        )
    if len(x) == 0:
        raise BadRequest("the WAV file holds no audio", "file", "invalid_file")
    return x.reshape(-1, channels).mean(axis=1), rate


def prepare(samples, rate):
    """16-bit PCM at the model's rate, ready for the decoder.

    Resampled in the frequency domain (exact band limiting for a whole
    utterance). Synthetic speech has stretches of exact digital silence, which
    the acoustic model (trained on recordings, never silent) handles badly:
    a short margin of silence and a faint, seeded noise floor make its input
    look like a recording, and decoding stays deterministic.
    """
    if rate != MODEL_RATE:
        n = max(1, int(round(len(samples) * MODEL_RATE / rate)))
        spectrum = np.fft.rfft(samples)[: n // 2 + 1]
        samples = np.fft.irfft(spectrum, n) * (n / len(samples))
    edge = np.zeros(int(EDGE_SILENCE_S * MODEL_RATE))
    samples = np.concatenate([edge, samples, edge])
    samples = samples + np.random.default_rng(0).normal(0.0, NOISE_RMS, len(samples))
    return np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes()


def parse_multipart(content_type, body):
    """Fields of a multipart/form-data body: {name: (filename or None, bytes)}."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise BadRequest("the request must be multipart/form-data", None, "invalid_request")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise BadRequest("the multipart body could not be read", None, "invalid_request")
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


class Transcriber:
    def __init__(self, models):
        self.models = models
        # Batch normalisation over each whole utterance: no state carries over
        # from one request to the next.
        self.decoder = Decoder(samprate=MODEL_RATE, cmn="batch", loglevel="FATAL")
        self.lock = threading.Lock()  # one decoder, one utterance at a time

    def transcribe(self, pcm):
        with self.lock:
            self.decoder.start_utt()
            self.decoder.process_raw(pcm, full_utt=True)
            self.decoder.end_utt()
            hyp = self.decoder.hyp()
            return hyp.hypstr if hyp else ""


def make_handler(transcriber):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "transcribe"

        def send(self, status, body, content_type="application/json"):
            if not isinstance(body, bytes):
                body = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def error(self, status, message, param=None, code=None):
            kind = "invalid_request_error" if status < 500 else "server_error"
            self.send(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})

        def do_GET(self):
            if self.path == "/health":
                self.send(200, {"status": "ok"})
            elif self.path == "/v1/models":
                data = [{"id": m, "object": "model", "owned_by": "local"} for m in transcriber.models]
                self.send(200, {"object": "list", "data": data})
            else:
                self.error(404, f"no route for GET {self.path}", code="not_found")

        def do_POST(self):
            try:
                length = int(self.headers.get("Content-Length") or -1)
            except ValueError:
                length = -1
            if length < 0:
                self.close_connection = True
                return self.error(411, "a Content-Length is required", code="length_required")
            if length > MAX_UPLOAD:
                self.close_connection = True
                return self.error(413, f"the upload exceeds {MAX_UPLOAD} bytes", "file", "file_too_large")
            body = self.rfile.read(length)
            if self.path != "/v1/audio/transcriptions":
                return self.error(404, f"no route for POST {self.path}", code="not_found")
            try:
                self.transcription(body)
            except BadRequest as e:
                self.error(e.status, str(e), e.param, e.code)
            except Exception as e:  # the client gets an answer, the log the trace
                self.log_error("transcription failed: %r", e)
                self.error(500, f"transcription failed: {e}", code="internal_error")

        def transcription(self, body):
            fields = parse_multipart(self.headers.get("Content-Type", ""), body)

            def text(name):
                return fields[name][1].decode("utf-8", "replace").strip() if name in fields else None

            if "file" not in fields:
                raise BadRequest("the request has no `file` field", "file", "missing_file")
            model = text("model")
            if not model:
                raise BadRequest("the request has no `model` field", "model", "missing_model")
            if model not in transcriber.models:
                raise BadRequest(f"the model `{model}` does not exist", "model", "model_not_found", 404)
            language = text("language")
            if language and language.lower() != "en" and not language.lower().startswith("en-"):
                raise BadRequest(f"language `{language}` is not supported: only en", "language", "unsupported_language")
            response_format = text("response_format") or "json"
            if response_format not in ("json", "text", "verbose_json"):
                raise BadRequest(
                    f"response_format `{response_format}` is not supported: use json, text or verbose_json",
                    "response_format",
                    "unsupported_response_format",
                )
            samples, rate = read_wav(fields["file"][1])
            result = transcriber.transcribe(prepare(samples, rate))
            if response_format == "text":
                self.send(200, result.encode(), "text/plain; charset=utf-8")
            elif response_format == "verbose_json":
                duration = round(len(samples) / rate, 3)
                self.send(200, {"task": "transcribe", "language": "english", "duration": duration, "text": result})
            else:
                self.send(200, {"text": result})

    return Handler


def exit_on_stdin_eof():
    def watch():
        while sys.stdin.buffer.read(4096):
            pass
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--model", action="append", help="a model name to accept (repeatable)")
    parser.add_argument(
        "--watch-stdin",
        action="store_true",
        help="exit when standard input closes, so the server never outlives its parent",
    )
    args = parser.parse_args()
    if args.watch_stdin:
        exit_on_stdin_eof()
    transcriber = Transcriber(args.model or ["pocketsphinx-en-us"])
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(transcriber))
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"listening http://{host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
