"""Tessera's gateway through the official `openai` client: one run of every
call a tool makes, reported as JSON for the Rust test to judge.

    python openai_client.py BASE_URL KEY POOR_KEY TEXT_MODEL IMAGE_MODEL SPEECH_MODEL TRANSCRIBE_MODEL

BASE_URL is the scheduler's address with /v1. KEY is a developer key with
room in its quota; POOR_KEY one whose plan cannot pay for speech. Prints one
JSON object on standard output: what each call answered, and for the
streamed completion, when (time.time(), seconds) each chunk arrived.
"""

import base64
import json
import sys
import time

import openai


def error_of(e):
    """What an SDK exception says: its class, status and code."""
    response = getattr(e, "response", None)
    return {
        "class": type(e).__name__,
        "status": getattr(e, "status_code", None),
        "code": getattr(e, "code", None),
        "type": getattr(e, "type", None),
        "retry_after": response.headers.get("retry-after") if response is not None else None,
    }


def main():
    base_url, key, poor_key, text_model, image_model, speech_model, stt_model = sys.argv[1:8]
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=60)
    report = {}

    report["models"] = sorted(m.id for m in client.models.list())

    started = time.time()
    chunks = []
    usage = None
    stream = client.chat.completions.create(
        model=text_model,
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Write a short story about the sea."},
        ],
        max_tokens=256,
        stream=True,
        stream_options={"include_usage": True},
    )
    completion_id = None
    finish = None
    for chunk in stream:
        completion_id = chunk.id
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            if choice.delta.content:
                chunks.append({"at": time.time(), "text": choice.delta.content})
            if choice.finish_reason:
                finish = choice.finish_reason
    report["stream"] = {
        "id": completion_id,
        "started": started,
        "chunks": chunks,
        "finish_reason": finish,
        "usage": usage,
        "done": time.time(),
    }

    answer = client.chat.completions.create(
        model=text_model,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
    )
    report["chat"] = {
        "content": answer.choices[0].message.content,
        "finish_reason": answer.choices[0].finish_reason,
        "usage": answer.usage.model_dump() if answer.usage else None,
    }

    image = client.images.generate(
        model=image_model, prompt="a lighthouse", size="512x512", response_format="b64_json"
    )
    png = base64.b64decode(image.data[0].b64_json)
    report["image"] = {"bytes": len(png), "png": png[:4] == b"\x89PNG"}

    speech = client.audio.speech.create(
        model=speech_model,
        voice="en-us",
        input="I would like a cup of coffee, please open the door and turn on the light.",
        response_format="wav",
    )
    wav = speech.read()
    report["speech"] = {"bytes": len(wav), "riff": wav[:4] == b"RIFF"}

    heard = client.audio.transcriptions.create(model=stt_model, file=("speech.wav", wav, "audio/wav"))
    report["transcription"] = heard.text

    errors = {}
    try:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    except openai.APIStatusError as e:
        errors["unknown_model"] = error_of(e)
    try:
        client.images.generate(model=image_model, prompt="x", size="9000x9000")
    except openai.APIStatusError as e:
        errors["too_large"] = error_of(e)
    poor = openai.OpenAI(base_url=base_url, api_key=poor_key, max_retries=0, timeout=60)
    try:
        poor.audio.speech.create(model=speech_model, voice="en-us", input="hello", response_format="wav")
    except openai.APIStatusError as e:
        errors["quota"] = error_of(e)
    bad = openai.OpenAI(base_url=base_url, api_key="tdk_" + "0" * 40, max_retries=0, timeout=60)
    try:
        bad.models.list()
    except openai.APIStatusError as e:
        errors["bad_key"] = error_of(e)
    report["errors"] = errors

    json.dump(report, sys.stdout)
    print()


if __name__ == "__main__":
    main()
