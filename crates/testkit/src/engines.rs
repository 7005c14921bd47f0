//! Real engines for the worker's tests, run on loopback.
//!
//! `scripts/test` installs them (see `scripts/engines.sh`): espeak-ng, and a
//! Python virtualenv whose interpreter it exports as `TESSERA_TEST_PYTHON`. The
//! helper scripts in this crate's `py/` folder run on that interpreter:
//!
//! - [`LlamaServer`]: llama.cpp's OpenAI-compatible server on a tiny GGUF model
//!   with random weights, written to a temporary folder for each server. Its
//!   output is random words, but it always runs to `max_tokens`.
//! - [`Transcriber`]: a server speaking OpenAI's transcription API, backed by
//!   PocketSphinx and its bundled US English model.
//! - [`S3Server`]: an S3-compatible object store (moto's, in memory) with one
//!   bucket, for artifacts kept in S3 rather than a local folder.
//!
//! Each server listens on a free loopback port it picks itself and prints its
//! address once ready; `start` waits for that line (for [`START_TIMEOUT`] at
//! most, panicking with the server's standard error otherwise). Dropping the
//! value kills the process, and the process also exits by itself if the test
//! process dies first (it watches its standard input).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tempfile::TempDir;

/// Environment variable naming the Python interpreter of the test engines.
pub const PYTHON_VAR: &str = "TESSERA_TEST_PYTHON";

/// How long a server may take to be ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The model name the tiny llama.cpp server answers to.
pub const LLAMA_MODEL: &str = "tiny-random-llama";

/// The model name the transcription server answers to.
pub const TRANSCRIBE_MODEL: &str = "pocketsphinx-en-us";

/// The most of a server's standard error kept for failure messages.
const STDERR_KEEP: usize = 64 * 1024;

/// The virtualenv's interpreter, from [`PYTHON_VAR`].
pub fn python() -> PathBuf {
    match std::env::var_os(PYTHON_VAR) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "{PYTHON_VAR} is not set: run the suite with scripts/test, which installs the \
             engines these tests run and sets it (or source scripts/engines.sh and run \
             engines_install)"
        ),
    }
}

/// A helper script of `crates/testkit/py`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py").join(name)
}

/// The espeak-ng executable, checked to run.
pub fn espeak_program() -> String {
    let program = "espeak-ng";
    match Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => program.to_owned(),
        other => panic!(
            "{program} does not run ({other:?}): run the suite with scripts/test, which \
             installs it, or `apt-get install espeak-ng`"
        ),
    }
}

/// llama.cpp's OpenAI-compatible server on a tiny random-weight model.
pub struct LlamaServer {
    /// Base URL, `http://127.0.0.1:PORT` (the API is under `/v1`).
    pub url: String,
    /// The model name it reports ([`LLAMA_MODEL`]).
    pub model: String,
    /// The GGUF file it serves.
    pub gguf: PathBuf,
    process: ServerProcess,
    _dir: TempDir,
}

impl LlamaServer {
    /// Writes the model and starts the server; blocks until it is ready.
    pub fn start() -> LlamaServer {
        let python = python();
        let dir = tempfile::tempdir().expect("temporary folder");
        let gguf = dir.path().join("tiny.gguf");
        let output = Command::new(&python)
            .arg(script("tiny_gguf.py"))
            .arg(&gguf)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        assert!(
            output.status.success(),
            "writing the test model failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let mut command = Command::new(&python);
        command.arg(script("llama_server.py")).arg(&gguf).args([
            "--alias",
            LLAMA_MODEL,
            "--threads",
            "2",
            "--watch-stdin",
        ]);
        let (process, url) = ServerProcess::spawn("llama.cpp server", command);
        LlamaServer {
            url,
            model: LLAMA_MODEL.to_owned(),
            gguf,
            process,
            _dir: dir,
        }
    }

    /// What the server wrote on standard error so far (its log).
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }
}

/// A transcription server (OpenAI's API) backed by PocketSphinx.
pub struct Transcriber {
    /// Base URL, `http://127.0.0.1:PORT` (the API is under `/v1`).
    pub url: String,
    /// The model name it accepts ([`TRANSCRIBE_MODEL`]).
    pub model: String,
    process: ServerProcess,
}

impl Transcriber {
    /// Starts the server; blocks until its model is loaded and it listens.
    pub fn start() -> Transcriber {
        let mut command = Command::new(python());
        command.arg(script("transcribe_server.py")).args([
            "--model",
            TRANSCRIBE_MODEL,
            "--watch-stdin",
        ]);
        let (process, url) = ServerProcess::spawn("transcription server", command);
        Transcriber {
            url,
            model: TRANSCRIBE_MODEL.to_owned(),
            process,
        }
    }

    /// What the server wrote on standard error so far (its request log).
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }
}

/// An S3-compatible object store on loopback with one bucket, [`S3Server::BUCKET`].
/// Path-style URLs (`{url}/{bucket}/{key}`); any credentials are accepted.
pub struct S3Server {
    /// Endpoint, `http://127.0.0.1:PORT`.
    pub url: String,
    process: ServerProcess,
}

impl S3Server {
    /// The bucket the server creates before it says it is ready.
    pub const BUCKET: &'static str = "tessera";

    /// Starts the server; blocks until the bucket exists.
    pub fn start() -> S3Server {
        let mut command = Command::new(python());
        command
            .arg(script("s3_server.py"))
            .args(["--bucket", Self::BUCKET, "--watch-stdin"]);
        let (process, url) = ServerProcess::spawn("S3 server", command);
        S3Server { url, process }
    }

    /// `artifacts.options` for a scheduler that keeps its objects here.
    pub fn options(&self) -> std::collections::BTreeMap<String, String> {
        [
            ("endpoint", self.url.as_str()),
            ("allow_http", "true"),
            ("region", "us-east-1"),
            ("access_key_id", "tessera-test"),
            ("secret_access_key", "tessera-test-secret"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The bucket as an object store, signed with [`S3Server::options`]'s
    /// credentials, to look at what a scheduler kept there.
    pub fn bucket(&self) -> object_store::aws::AmazonS3 {
        let mut builder = object_store::aws::AmazonS3Builder::new().with_bucket_name(Self::BUCKET);
        for (key, value) in self.options() {
            builder = builder.with_config(key.parse().expect("an S3 option"), value);
        }
        builder.build().expect("an S3 client for the test server")
    }

    /// What the server wrote on standard error so far (its request log).
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }
}

/// A child process that prints `listening URL` on standard output when ready.
pub(crate) struct ServerProcess {
    name: &'static str,
    child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<JoinHandle<()>>,
    /// Whether a panic already showed the standard error.
    reported: bool,
}

impl ServerProcess {
    pub(crate) fn spawn(name: &'static str, mut command: Command) -> (ServerProcess, String) {
        let mut child = command
            // Kept open by the child's parent: closing it ends the child.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {name} ({command:?}): {e}"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_reader = {
            let mut pipe = child.stderr.take().expect("stderr is piped");
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    let mut kept = stderr.lock().unwrap_or_else(|e| e.into_inner());
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > STDERR_KEEP {
                        let cut = kept.len() - STDERR_KEEP;
                        kept.drain(..cut);
                    }
                }
            })
        };
        let (tx, rx) = mpsc::channel();
        {
            let stdout = child.stdout.take().expect("stdout is piped");
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                for line in lines.by_ref() {
                    let Ok(line) = line else { break };
                    if let Some(url) = line.strip_prefix("listening ") {
                        let _ = tx.send(url.trim().to_owned());
                        break;
                    }
                }
                // Keep draining so the child never blocks on a full pipe.
                for _ in lines {}
            });
        }
        let mut process = ServerProcess {
            name,
            child,
            stderr,
            stderr_reader: Some(stderr_reader),
            reported: false,
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(url) => (process, url),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                process.stop();
                process.reported = true;
                panic!(
                    "the {name} was not ready within {START_TIMEOUT:?}; its standard error:\n{}",
                    process.stderr()
                )
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = match process.child.wait() {
                    Ok(status) => status.to_string(),
                    Err(e) => e.to_string(),
                };
                if let Some(reader) = process.stderr_reader.take() {
                    let _ = reader.join();
                }
                process.reported = true;
                panic!(
                    "the {name} exited before it was ready ({status}); its standard error:\n{}",
                    process.stderr()
                )
            }
        }
    }

    pub(crate) fn stderr(&self) -> String {
        let kept = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&kept).into_owned()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() && !self.reported {
            eprintln!(
                "--- standard error of the {} ---\n{}",
                self.name,
                self.stderr()
            );
        }
    }
}
