//! The worker's engines against real engine processes, on loopback.
//!
//! `scripts/test` installs the engines (espeak-ng, and llama.cpp's server and
//! PocketSphinx in a Python virtualenv); `tessera_testkit::engines` starts them.
//! Run alone with `scripts/test -E 'binary(real_engines)'`.
//!
//! Text generation runs a tiny model with random weights, so these tests check
//! the protocol (token counts, finish reasons, streaming), never the words.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use tessera_api::internal::ArtifactKind;
use tessera_core::params::{JobParams, TextToSpeechParams};
use tessera_core::JobId;
use tessera_testkit::engines::{self, LlamaServer, Transcriber};
use tessera_worker::engine::espeak::{Espeak, EspeakConfig};
use tessera_worker::engine::{Engine, Progress, Task};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

fn espeak() -> Espeak {
    Espeak::new(EspeakConfig {
        program: engines::espeak_program(),
        models: vec!["espeak-ng".into()],
        default_voice: "en".into(),
        words_per_minute: 175,
    })
    .expect("espeak engine")
}

fn speech_task(text: &str, voice: Option<&str>, speed: f32) -> Task {
    Task {
        job_id: JobId::generate(),
        model: "espeak-ng".into(),
        params: JobParams::TextToSpeech(TextToSpeechParams {
            text: text.into(),
            voice: voice.map(Into::into),
            speed,
        }),
        inputs: Vec::new(),
    }
}

/// Speaks `text` through the worker's espeak engine; returns the WAV file.
async fn speak(text: &str, voice: Option<&str>, speed: f32) -> Vec<u8> {
    let (progress, rx) = Progress::new();
    let artifacts = espeak()
        .run(
            &speech_task(text, voice, speed),
            &progress,
            &CancellationToken::new(),
        )
        .await
        .expect("espeak job");
    assert_eq!(*rx.borrow(), Some(100.0), "progress ends at 100%");
    assert_eq!(artifacts.len(), 1, "one artifact");
    let artifact = &artifacts[0];
    assert_eq!(artifact.meta.kind, ArtifactKind::Audio);
    assert_eq!(artifact.meta.format, "wav");
    artifact.bytes.to_vec()
}

/// What a WAV file holds, read strictly: sizes in the header must be exact.
#[derive(Debug)]
struct Wav {
    channels: u16,
    rate: u32,
    bits: u16,
    samples: Vec<i16>,
}

impl Wav {
    fn parse(wav: &[u8]) -> Wav {
        let u32_at = |at: usize| u32::from_le_bytes(wav[at..at + 4].try_into().unwrap());
        let u16_at = |at: usize| u16::from_le_bytes(wav[at..at + 2].try_into().unwrap());
        assert!(wav.len() >= 44, "a WAV file has a 44-byte header at least");
        assert_eq!(&wav[0..4], b"RIFF");
        assert_eq!(&wav[8..12], b"WAVE");
        assert_eq!(u32_at(4) as usize, wav.len() - 8, "RIFF size is exact");
        let mut at = 12;
        let mut fmt = None;
        while at + 8 <= wav.len() {
            let size = u32_at(at + 4) as usize;
            match &wav[at..at + 4] {
                b"fmt " => {
                    fmt = Some((
                        u16_at(at + 8),
                        u16_at(at + 10),
                        u32_at(at + 12),
                        u16_at(at + 22),
                    ))
                }
                b"data" => {
                    assert_eq!(size, wav.len() - at - 8, "data size is exact");
                    let (format, channels, rate, bits) = fmt.expect("fmt chunk before data");
                    assert_eq!(format, 1, "PCM");
                    assert_eq!(bits, 16);
                    let samples = wav[at + 8..]
                        .chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]]))
                        .collect();
                    return Wav {
                        channels,
                        rate,
                        bits,
                        samples,
                    };
                }
                _ => {}
            }
            at += 8 + size + size % 2;
        }
        panic!("no data chunk");
    }

    fn seconds(&self) -> f64 {
        self.samples.len() as f64 / self.channels as f64 / self.rate as f64
    }

    /// Root mean square, as a fraction of full scale.
    fn rms(&self) -> f64 {
        let sum: f64 = self.samples.iter().map(|&s| (s as f64).powi(2)).sum();
        (sum / self.samples.len() as f64).sqrt() / 32768.0
    }
}

#[tokio::test]
async fn espeak_speaks_a_valid_wav_of_plausible_length() {
    // 15 words; at 175 words a minute, about five seconds.
    let text =
        "Tessera turns a few machines into a service that thousands of people can share fairly.";
    let wav = Wav::parse(&speak(text, None, 1.0).await);
    assert_eq!(
        (wav.channels, wav.rate, wav.bits),
        (1, 22050, 16),
        "{wav:?}"
    );
    let seconds = wav.seconds();
    assert!(
        (2.5..10.0).contains(&seconds),
        "15 words at 175 words a minute should last about 5 s, not {seconds:.2} s"
    );
    assert!(
        wav.rms() > 0.01,
        "the audio is not silent (RMS {:.4})",
        wav.rms()
    );

    // Twice the speed: clearly shorter.
    let fast = Wav::parse(&speak(text, None, 2.0).await).seconds();
    assert!(
        fast < seconds * 0.75,
        "speed 2.0 gave {fast:.2} s against {seconds:.2} s at 1.0"
    );
}

/// Word error rate: word-level edit distance over the reference's length,
/// ignoring case and punctuation.
fn word_error_rate(reference: &str, hypothesis: &str) -> f64 {
    let words = |s: &str| -> Vec<String> {
        s.split_whitespace()
            .map(|w| {
                w.chars()
                    .filter(|c| c.is_alphanumeric() || *c == '\'')
                    .collect::<String>()
                    .to_lowercase()
            })
            .filter(|w| !w.is_empty())
            .collect()
    };
    let (r, h) = (words(reference), words(hypothesis));
    let mut row: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, hw) in h.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(rw != hw)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[h.len()] as f64 / r.len().max(1) as f64
}

#[test]
fn word_error_rate_counts_edits() {
    assert_eq!(word_error_rate("the cat sat", "The cat, sat."), 0.0);
    assert_eq!(word_error_rate("the cat sat", "the bat sat"), 1.0 / 3.0);
    assert_eq!(word_error_rate("the cat sat", "cat sat down"), 2.0 / 3.0);
    assert_eq!(word_error_rate("a b", ""), 1.0);
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("HTTP client")
}

/// Posts one transcription request the way OpenAI's API takes it.
async fn transcribe(
    server: &Transcriber,
    wav: Vec<u8>,
    model: &str,
    response_format: &str,
) -> reqwest::Response {
    let file = reqwest::multipart::Part::bytes(wav)
        .file_name("speech.wav")
        .mime_str("audio/wav")
        .unwrap();
    let form = reqwest::multipart::Form::new()
        .part("file", file)
        .text("model", model.to_owned())
        .text("language", "en")
        .text("response_format", response_format.to_owned());
    http()
        .post(format!("{}/v1/audio/transcriptions", server.url))
        .multipart(form)
        .send()
        .await
        .expect("transcription request")
}

/// Speech made by the espeak engine comes back as the same words.
///
/// The sentence and the bound were chosen by measurement: PocketSphinx's
/// general US English model hears espeak-ng's "en-us" voice well on common
/// words, and this sentence came back with 0 or 1 wrong word of 16 at 160, 175
/// and 190 words a minute under eight noise seeds. Other sentences did far
/// worse ("the weather is nice today" came back as "the weather is like the
/// grade"), and the British "en" voice is heard much less well, hence the voice.
/// A bound of 25% (4 words) leaves room for another espeak-ng or CPU, while a
/// broken pipeline (wrong rate, truncated or garbled audio) scores near 100%.
#[tokio::test]
async fn speech_round_trips_through_espeak_and_the_transcriber() {
    const SENTENCE: &str =
        "I would like a cup of coffee, please open the door and turn on the light.";
    const MAX_WER: f64 = 0.25;
    let server = Transcriber::start();
    let wav = speak(SENTENCE, Some("en-us"), 1.0).await;
    let started = Instant::now();
    let response = transcribe(&server, wav, &server.model, "json").await;
    assert_eq!(response.status(), 200, "{}", server.stderr());
    let body: Value = response.json().await.unwrap();
    let text = body["text"].as_str().expect("a text field");
    let wer = word_error_rate(SENTENCE, text);
    assert!(
        wer <= MAX_WER,
        "word error rate {wer:.2} > {MAX_WER}: heard {text:?} for {SENTENCE:?}"
    );
    eprintln!("heard {text:?} (WER {wer:.2}) in {:?}", started.elapsed());
}

/// The transcription server keeps to OpenAI's API, which the worker's
/// transcription adapter speaks: `{"text"}` on success, `{"error": {...}}` with
/// a 4xx status on a bad request.
#[tokio::test]
async fn transcription_api_answers_like_openai() {
    let server = Transcriber::start();
    let wav = speak("one two three", Some("en-us"), 1.0).await;

    let text = transcribe(&server, wav.clone(), &server.model, "text").await;
    assert_eq!(text.status(), 200);
    assert!(text
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(!text.text().await.unwrap().trim().is_empty());

    let unknown = transcribe(&server, wav.clone(), "no-such-model", "json").await;
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found", "{body}");
    assert_eq!(body["error"]["param"], "model");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no-such-model"));

    let not_audio = transcribe(&server, b"not a wav file".to_vec(), &server.model, "json").await;
    assert_eq!(not_audio.status(), 400);
    let body: Value = not_audio.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(body["error"]["code"], "invalid_file");

    let format = transcribe(&server, wav, &server.model, "srt").await;
    assert_eq!(format.status(), 400);
    let body: Value = format.json().await.unwrap();
    assert_eq!(body["error"]["param"], "response_format", "{body}");

    let no_file = http()
        .post(format!("{}/v1/audio/transcriptions", server.url))
        .multipart(reqwest::multipart::Form::new().text("model", server.model.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(no_file.status(), 400);
    let body: Value = no_file.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_file", "{body}");
}

/// The number of tokens llama.cpp's server makes of a chat, by its own
/// template and tokenizer: what `usage.prompt_tokens` must say.
async fn prompt_tokens(server: &LlamaServer, messages: &Value) -> u64 {
    let client = http();
    let applied: Value = client
        .post(format!("{}/apply-template", server.url))
        .json(&json!({ "messages": messages }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tokens: Value = client
        .post(format!("{}/tokenize", server.url))
        .json(&json!({ "content": applied["prompt"], "add_special": true, "parse_special": true }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tokens["tokens"].as_array().expect("tokens").len() as u64
}

/// One server-sent events stream of chat completion chunks, read to its end.
#[derive(Debug, Default)]
struct ChatStream {
    /// Chunks that carried text.
    content_chunks: usize,
    text: String,
    finish_reason: Option<String>,
    usage: Option<Value>,
    done: bool,
}

async fn stream_chat(server: &LlamaServer, body: &Value) -> ChatStream {
    let response = http()
        .post(format!("{}/v1/chat/completions", server.url))
        .json(body)
        .send()
        .await
        .expect("chat request");
    assert_eq!(response.status(), 200, "{}", server.stderr());
    assert!(response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut out = ChatStream::default();
    let mut buf = Vec::new();
    let mut bytes = response.bytes_stream();
    while let Some(piece) = bytes.next().await {
        buf.extend_from_slice(&piece.expect("stream"));
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            for line in String::from_utf8(event).unwrap().lines() {
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                let data = data.trim();
                if data == "[DONE]" {
                    out.done = true;
                    continue;
                }
                let chunk: Value = serde_json::from_str(data).expect("a JSON chunk");
                assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
                if let Some(choice) = chunk["choices"].get(0) {
                    if let Some(text) = choice["delta"]["content"].as_str() {
                        if !text.is_empty() {
                            out.content_chunks += 1;
                            out.text.push_str(text);
                        }
                    }
                    if let Some(reason) = choice["finish_reason"].as_str() {
                        out.finish_reason = Some(reason.to_owned());
                    }
                }
                if chunk["usage"].is_object() {
                    out.usage = Some(chunk["usage"].clone());
                }
            }
        }
    }
    out
}

/// The OpenAI-compatible chat API of the real llama.cpp server, streamed as the
/// worker's text adapter asks for it.
#[tokio::test]
async fn llama_server_streams_chat_completions_to_max_tokens() {
    let server = LlamaServer::start();
    let messages = json!([
        { "role": "system", "content": "You are a helpful assistant." },
        { "role": "user", "content": "Write a short story about the sea." },
    ]);
    let max_tokens = 24;
    let started = Instant::now();
    let stream = stream_chat(
        &server,
        &json!({
            "model": server.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0.8,
            "stream": true,
            "stream_options": { "include_usage": true },
        }),
    )
    .await;
    let elapsed = started.elapsed();
    assert!(stream.done, "the stream ends with [DONE]: {stream:?}");
    assert_eq!(
        stream.finish_reason.as_deref(),
        Some("length"),
        "{stream:?}"
    );
    let usage = stream.usage.clone().expect("usage in the last chunk");
    assert_eq!(usage["completion_tokens"], max_tokens, "{usage}");
    assert_eq!(
        usage["prompt_tokens"],
        prompt_tokens(&server, &messages).await,
        "{usage}"
    );
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(usage["prompt_tokens"].as_u64().unwrap() + max_tokens)
    );
    // The model's vocabulary is whole words and letters: each token is text.
    assert!(
        stream.content_chunks >= max_tokens as usize / 2,
        "several chunks streamed: {stream:?}"
    );
    assert!(!stream.text.trim().is_empty());
    eprintln!(
        "{} chunks, {} completion tokens in {elapsed:?}: {:?}",
        stream.content_chunks, usage["completion_tokens"], stream.text
    );
}

#[tokio::test]
async fn llama_server_answers_without_streaming_and_names_its_model() {
    let server = LlamaServer::start();
    let models: Value = http()
        .get(format!("{}/v1/models", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], server.model, "{models}");

    let messages = json!([{ "role": "user", "content": "Say hello." }]);
    let response: Value = http()
        .post(format!("{}/v1/chat/completions", server.url))
        .json(&json!({
            "model": server.model,
            "messages": messages,
            "max_tokens": 5,
            "temperature": 0.0,
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(response["object"], "chat.completion", "{response}");
    assert_eq!(response["model"], server.model);
    assert_eq!(response["choices"][0]["finish_reason"], "length");
    assert_eq!(response["usage"]["completion_tokens"], 5);
    assert_eq!(
        response["usage"]["prompt_tokens"],
        prompt_tokens(&server, &messages).await
    );
    let text = response["choices"][0]["message"]["content"]
        .as_str()
        .unwrap();
    assert!(!text.trim().is_empty(), "{response}");
}

// ---------------------------------------------------------------------------
// The same engines through the worker's `openai_chat` and `openai_transcription`
// adapters.

/// The `openai_chat` adapter against the real llama.cpp server: the token
/// counts, finish reason and chunk count it reports are the server's.
#[tokio::test]
async fn openai_chat_adapter_streams_from_the_llama_server() {
    use tessera_core::params::TextParams;
    use tessera_worker::engine::openai_chat::{OpenAiChat, OpenAiChatConfig};

    let server = LlamaServer::start();
    let config: OpenAiChatConfig = serde_json::from_value(json!({
        "url": server.url,
        "models": ["chat-small"],
        "upstream_model": server.model,
    }))
    .expect("openai_chat settings");
    let chat = OpenAiChat::new(config, http());
    let params = TextParams {
        prompt: "Write a short story about the sea.".into(),
        system: Some("You are a helpful assistant.".into()),
        max_tokens: 24,
        temperature: 0.8,
    };
    let (progress, _rx) = Progress::new();
    let completion = chat
        .complete("chat-small", &params, &progress, &CancellationToken::new())
        .await
        .expect("completion");
    assert_eq!(completion.finish_reason.as_deref(), Some("length"));
    assert_eq!(completion.completion_tokens, Some(24));
    // The adapter sends the system prompt, then the user's: the server counts
    // exactly the tokens its template and tokenizer make of those two.
    let messages = json!([
        { "role": "system", "content": "You are a helpful assistant." },
        { "role": "user", "content": "Write a short story about the sea." },
    ]);
    assert_eq!(
        completion.prompt_tokens,
        Some(prompt_tokens(&server, &messages).await)
    );
    assert!(
        completion.chunks >= 12,
        "several chunks streamed, not {}",
        completion.chunks
    );
    assert!(!completion.text.trim().is_empty());
}

/// Jobs through the engines the worker builds from its configuration: a text
/// job on the llama.cpp server, and a speech-to-text job on the transcriber
/// with speech the espeak engine made (same sentence and bound as
/// `speech_round_trips_through_espeak_and_the_transcriber`).
#[tokio::test]
async fn openai_adapters_run_jobs_on_the_real_servers() {
    use tessera_core::params::{SpeechToTextParams, TextParams};
    use tessera_core::InputId;
    use tessera_worker::config::EngineConfig;
    use tessera_worker::engine::Input;

    const SENTENCE: &str =
        "I would like a cup of coffee, please open the door and turn on the light.";
    let llama = LlamaServer::start();
    let transcriber = Transcriber::start();
    let configs: Vec<EngineConfig> = serde_json::from_value(json!([
        { "kind": "openai_chat", "url": llama.url,
          "models": ["chat-small"], "upstream_model": llama.model },
        { "kind": "openai_transcription", "url": transcriber.url,
          "models": ["stt-en"], "upstream_model": transcriber.model },
    ]))
    .expect("engine settings");
    let engines = tessera_worker::engine::build(&configs, &http()).expect("engines");
    let (chat, stt) = (&engines[0], &engines[1]);
    assert_eq!(chat.kind(), "openai_chat");
    assert_eq!(stt.kind(), "openai_transcription");

    let (progress, _rx) = Progress::new();
    let text_job = Task {
        job_id: JobId::generate(),
        model: "chat-small".into(),
        params: JobParams::Text(TextParams {
            prompt: "Say hello.".into(),
            system: None,
            max_tokens: 8,
            temperature: 0.7,
        }),
        inputs: Vec::new(),
    };
    let artifacts = chat
        .run(&text_job, &progress, &CancellationToken::new())
        .await
        .expect("text job");
    assert_eq!(artifacts.len(), 1);
    assert_eq!(artifacts[0].meta.kind, ArtifactKind::Text);
    assert!(!artifacts[0].bytes.is_empty());

    let input_id = InputId::generate();
    let speech_job = |bytes: Vec<u8>| Task {
        job_id: JobId::generate(),
        model: "stt-en".into(),
        params: JobParams::SpeechToText(SpeechToTextParams {
            input_id: input_id.clone(),
            language: Some("en".into()),
        }),
        inputs: vec![Input {
            id: input_id.clone(),
            content_type: "audio/wav".into(),
            bytes: bytes.into(),
        }],
    };
    let wav = speak(SENTENCE, Some("en-us"), 1.0).await;
    let (progress, _rx) = Progress::new();
    let artifacts = stt
        .run(&speech_job(wav), &progress, &CancellationToken::new())
        .await
        .expect("speech-to-text job");
    assert_eq!(artifacts.len(), 1);
    assert_eq!(artifacts[0].meta.kind, ArtifactKind::Text);
    let heard = String::from_utf8(artifacts[0].bytes.to_vec()).unwrap();
    let wer = word_error_rate(SENTENCE, &heard);
    assert!(wer <= 0.25, "word error rate {wer:.2}: heard {heard:?}");

    // The server refuses a file that is not audio (400, invalid_file): the
    // job is at fault, so another attempt would fail the same way.
    let (progress, _rx) = Progress::new();
    let err = stt
        .run(
            &speech_job(b"not a wav file".to_vec()),
            &progress,
            &CancellationToken::new(),
        )
        .await
        .expect_err("a file that is not audio");
    assert!(!err.retryable, "{err:?}");
}

/// A text job's tokens reach its followers as the llama.cpp server writes
/// them: the worker's output pieces arrive at the scheduler, and through
/// `GET /api/v1/jobs/{id}/events` at the follower, before the result ends
/// the job; together they are the reply the job keeps.
#[tokio::test]
async fn a_text_jobs_tokens_reach_its_followers_before_it_ends() {
    use tessera_api::public::CreateJobRequest;
    use tessera_core::{Capability, Platform};
    use tessera_testkit::sse::Events;
    use tessera_testkit::{Backend, TestApp};
    use tessera_worker::config::EngineConfig;

    let llama = LlamaServer::start();
    let app = TestApp::spawn(Backend::Sqlite).await;
    let key = app.key(Platform::Web, "web-1").await;
    let web = app.client_with(&key);
    let job = web
        .create_job(
            &CreateJobRequest {
                context: None,
                callback_url: None,
                frontend: Platform::Web,
                bot_id: "web-1".parse().unwrap(),
                capability: Capability::Text,
                user_ref: "web:me".parse().unwrap(),
                reply_context: None,
                params: json!({"prompt": "Write a short story about the sea.",
                               "max_tokens": 200, "temperature": 0.8}),
            },
            None,
        )
        .await
        .unwrap()
        .job
        .job_id;
    // Followed before any worker can take it, so every piece is seen.
    let mut events = Events::open(&app.base_url(), &key, &job).await;
    let config: EngineConfig = serde_json::from_value(json!({
        "kind": "openai_chat", "url": llama.url,
        "models": ["llama-3.2-3b"], "upstream_model": llama.model,
    }))
    .expect("openai_chat settings");
    let _worker = app.worker("worker-text-0", vec![config]).await;

    let mut text = String::new();
    let mut pieces = 0;
    let mut started = 0;
    let end = loop {
        let (name, data) = events
            .next_within(Duration::from_secs(120))
            .await
            .expect("the stream ends with `end`, not before");
        match name.as_str() {
            "started" => {
                started += 1;
                text.clear();
            }
            "output" => {
                pieces += 1;
                text.push_str(data["text"].as_str().expect("an output's text"));
            }
            "progress" => {}
            "end" => break data,
            other => panic!("unexpected event {other}: {data}"),
        }
    };
    assert_eq!(events.next().await, None, "the stream closes after the end");
    assert_eq!(end["status"], "COMPLETED", "{end}");
    assert_eq!(started, 1, "one attempt");
    assert!(pieces >= 1, "no output came before the end");
    let url = end["artifacts"][0]["url"]
        .as_str()
        .expect("a text artifact");
    let reply = String::from_utf8(web.download(url).await.unwrap()).unwrap();
    assert!(!reply.is_empty());
    assert_eq!(
        text, reply,
        "the streamed text is the reply, in {pieces} pieces"
    );
    let streamed = app.scrape_metrics().await;
    let bytes = streamed
        .lines()
        .find(|l| l.starts_with("tessera_stream_output_bytes_total{capability=\"text\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert_eq!(bytes, Some(reply.len() as f64));
    app.shutdown().await;
}
