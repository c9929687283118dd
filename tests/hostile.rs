//! The release binary against careless and hostile clients, over raw
//! sockets where a well-behaved HTTP client cannot misbehave enough: silent
//! and slow connections, SIGTERM under a flood of half-open ones, webhooks
//! that would make the server buffer before it checks anything, and methods
//! that would grow the metrics.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use actiond::crypto::Sealer;
use common::APP_SECRET;
use common::database::TestDatabase;
use common::process::{Server, actiond, production_env, temp_dir};

/// The binary on a fresh database; nothing here reaches the Graph API.
struct Binary {
    server: Server,
    address: String,
    _database: TestDatabase,
    dir: PathBuf,
}

impl Binary {
    fn start(extra: &[(&str, &str)]) -> Self {
        let dir = temp_dir();
        let database = TestDatabase::fresh(&dir);
        let mut command = actiond(&dir, &["serve", "--log-format", "json"]);
        production_env(&mut command, &database, "http://127.0.0.1:9", &Sealer::generate_key());
        command.env("ACTIOND_WHATSAPP_APP_SECRET", APP_SECRET);
        for (name, value) in extra {
            command.env(name, value);
        }
        let mut server = Server::start(command);
        let address = server.address().trim_start_matches("http://").to_owned();
        Self { server, address, _database: database, dir }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(&self.address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
        stream
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Everything the server sends until it closes the connection.
fn read_to_close(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(error) if error.kind() == ErrorKind::ConnectionReset => break,
            Err(error) => panic!("the server neither answered nor closed: {error}"),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// One response read off a kept-alive connection (its body is JSON with a Content-Length).
fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        let read = stream.read(&mut buffer).expect("a response");
        assert!(read > 0, "closed mid-response: {text}");
        received.extend_from_slice(&buffer[..read]);
    }
}

#[test]
fn a_head_that_does_not_arrive_within_10_s_is_answered_408_and_closed() {
    let binary = Binary::start(&[]);
    let started = Instant::now();
    let mut silent = binary.connect();
    let mut partial = binary.connect();
    partial.write_all(b"GET /healthz HTTP/1.1\r\nHost: actiond\r\n").unwrap();
    for stream in [&mut silent, &mut partial] {
        let answer = read_to_close(stream);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    }
    assert!(started.elapsed() >= Duration::from_secs(9), "not before its 10 s: {:?}", started.elapsed());
}

#[test]
fn a_body_that_does_not_arrive_within_30_s_of_its_head_is_answered_408_and_closed() {
    let binary = Binary::start(&[]);
    let mut stream = binary.connect();
    let head = "POST /v2/_actions HTTP/1.1\r\nHost: actiond\r\nContent-Type: application/json\r\nContent-Length: 100\r\n";
    // Timed from before the head is sent, so the time measured is never shorter than the server's.
    let started = Instant::now();
    stream.write_all(format!("{head}Authorization: Bearer {}\r\n\r\n{{\"name\":", common::process::token("slow")).as_bytes()).unwrap();
    let answer = read_to_close(&mut stream);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\"") && answer.contains("\"ctx_id\""), "{answer}");
    assert!(started.elapsed() >= Duration::from_secs(29), "not before its 30 s: {:?}", started.elapsed());
}

#[test]
fn a_kept_alive_connection_serves_again_after_a_pause_and_closes_after_60_s_idle() {
    let binary = Binary::start(&[]);
    let mut stream = binary.connect();
    let request = b"GET /healthz HTTP/1.1\r\nHost: actiond\r\n\r\n";
    stream.write_all(request).unwrap();
    assert!(read_response(&mut stream).starts_with("HTTP/1.1 200"));
    // Longer than a head may take: an idle connection is not a slow head.
    std::thread::sleep(Duration::from_secs(15));
    // Timed from before the request, so the idle time measured is never shorter than the server's.
    let idle_since = Instant::now();
    stream.write_all(request).unwrap();
    assert!(read_response(&mut stream).starts_with("HTTP/1.1 200"), "served after 15 s idle");
    assert_eq!(read_to_close(&mut stream), "", "an idle connection closes without an answer");
    let idle = idle_since.elapsed();
    assert!(idle >= Duration::from_secs(59) && idle < Duration::from_secs(75), "closed after {idle:?} idle");
}

#[test]
fn sigterm_exits_at_once_whatever_half_open_connections_do() {
    let mut binary = Binary::start(&[("ACTIOND_SHUTDOWN_GRACE_MS", "20000")]);
    let mut held: Vec<TcpStream> = (0..50).map(|_| binary.connect()).collect();
    for (index, stream) in held.iter_mut().enumerate() {
        let partial: &[u8] = match index % 3 {
            0 => b"",
            1 => b"GET /healthz HTTP/1.1\r\nHo",
            _ => b"POST /v2/_whatsapp/webhook HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\nX-Hub-Signature-256: sha256=00\r\n\r\n{",
        };
        stream.write_all(partial).unwrap();
    }
    // A request under way when SIGTERM comes is finished.
    let mut waiting = binary.connect();
    waiting.write_all(b"GET /healthz HTTP/1.1\r\nHost: actiond\r\n\r\n").unwrap();
    assert!(read_response(&mut waiting).starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(200));

    let started = Instant::now();
    let status = binary.server.terminate();
    assert!(status.success(), "exit 0: nothing under way was abandoned ({status})");
    // Half the 20 s grace: long enough for a loaded machine, far short of waiting the grace out.
    assert!(started.elapsed() < Duration::from_secs(10), "SIGTERM took {:?} with 50 half-open connections", started.elapsed());
}

#[test]
fn the_webhook_refuses_before_reading_a_body_it_would_not_use() {
    let binary = Binary::start(&[]);
    // Headers that promise 100 MiB, then nothing: the answer cannot have waited for the body.
    let promise = |signature: Option<&str>| {
        let mut stream = binary.connect();
        let mut head = String::from("POST /v2/_whatsapp/webhook HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n");
        if let Some(signature) = signature {
            head.push_str(&format!("X-Hub-Signature-256: {signature}\r\n"));
        }
        head.push_str("Content-Length: 104857600\r\n\r\n{\"object\":");
        stream.write_all(head.as_bytes()).unwrap();
        // Half the 30 s a body may take: an answer that waited for it would not come in time.
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut buffer = [0u8; 512];
        let read = stream.read(&mut buffer).expect("answered without the body");
        String::from_utf8_lossy(&buffer[..read]).into_owned()
    };
    let valid_form = format!("sha256={}", "ab".repeat(32));
    assert!(promise(None).starts_with("HTTP/1.1 401"), "no signature");
    assert!(promise(Some("sha256=00")).starts_with("HTTP/1.1 401"), "a signature of the wrong form");
    assert!(promise(Some("md5=abc")).starts_with("HTTP/1.1 401"), "another algorithm");
    assert!(promise(Some(&valid_form)).starts_with("HTTP/1.1 413"), "a declared 100 MiB");

    // Streamed without a length: refused once 3 MiB have come, not buffered to the end.
    let mut stream = binary.connect();
    let head = format!(
        "POST /v2/_whatsapp/webhook HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nX-Hub-Signature-256: {valid_form}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0usize;
    let mut refused = false;
    while sent < 64 * 1024 * 1024 {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if stream.write_all(&framed).is_err() {
            refused = true;
            break;
        }
        sent += chunk.len();
        stream.set_nonblocking(true).unwrap();
        let mut peek = [0u8; 64];
        let answered = matches!(stream.peek(&mut peek), Ok(read) if read > 0);
        stream.set_nonblocking(false).unwrap();
        if answered {
            refused = true;
            break;
        }
    }
    assert!(refused, "64 MiB streamed and still reading");
    // What the kernel's socket buffers took counts too: well short of 64 MiB.
    assert!(sent <= 16 * 1024 * 1024, "refused only after {sent} bytes");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[test]
fn metric_labels_stay_bounded_whatever_methods_and_paths_clients_send() {
    let binary = Binary::start(&[]);
    for index in 0..20 {
        let mut stream = binary.connect();
        let request = format!("BREW{index} /no/such/path/{index} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let answer = read_to_close(&mut stream);
        assert!(answer.starts_with("HTTP/1.1 404") || answer.starts_with("HTTP/1.1 405"), "{answer}");
    }
    let mut stream = binary.connect();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
    let metrics = read_to_close(&mut stream);
    assert!(!metrics.contains("BREW") && !metrics.contains("/no/such/path"), "{metrics}");
    assert!(metrics.contains(r#"route="unmatched",method="other""#), "{metrics}");
}
