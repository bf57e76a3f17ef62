//! Downloading model files (`flint::hub`, `flint pull`, `-m hf:...`) against HTTP servers started
//! here on 127.0.0.1: well-behaved ones, and ones that misbehave on purpose (ignore Range, close
//! early, send the wrong bytes, refuse). The library is driven through `HubOptions` (endpoint,
//! cache, token), never the process environment; the CLI test sets the environment of the child.

use flint::hub::{self, HubOptions, Source};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the server saw it (header names lower-case).
#[derive(Debug, Clone)]
struct Request {
    path: String,
    headers: HashMap<String, String>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// An HTTP/1.1 server on a free port of 127.0.0.1: each connection gets one response, the raw
/// bytes `handler` returns for its request (and its index among all requests), then is closed.
struct Server {
    base: String,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    fn start(handler: impl Fn(&Request, usize) -> Vec<u8> + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (handler, log) = (handler.clone(), log.clone());
                std::thread::spawn(move || serve_one(stream, &*handler, &log));
            }
        });
        Server { base, seen }
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve_one(
    mut stream: TcpStream,
    handler: &(dyn Fn(&Request, usize) -> Vec<u8> + Send + Sync),
    log: &Mutex<Vec<Request>>,
) {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let req = Request { path, headers };
    let index = {
        let mut log = log.lock().unwrap();
        log.push(req.clone());
        log.len() - 1
    };
    let response = handler(&req, index);
    stream.write_all(&response).ok();
    stream.flush().ok();
    stream.shutdown(std::net::Shutdown::Both).ok();
}

/// A response with `Content-Length` (unless `headers` sets one) and `Connection: close`.
fn response(status: u16, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        out += &format!("Content-Length: {}\r\n", body.len());
    }
    for (k, v) in headers {
        out += &format!("{k}: {v}\r\n");
    }
    out += "\r\n";
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// `data` as a server that honours `Range: bytes=N-` serves it (206, or 416 past the end).
fn serve_range(req: &Request, data: &[u8], extra: &[(&str, String)]) -> Vec<u8> {
    let len = data.len();
    let Some(from) = req
        .header("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return response(200, extra, data);
    };
    if from >= len {
        let mut h = extra.to_vec();
        h.push(("Content-Range", format!("bytes */{len}")));
        return response(416, &h, b"");
    }
    let mut h = extra.to_vec();
    h.push(("Content-Range", format!("bytes {from}-{}/{len}", len - 1)));
    response(206, &h, &data[from..])
}

/// Deterministic bytes that do not repeat in any short period.
fn model_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh, empty cache folder for one test.
fn temp_cache(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flint-hub-{}-{name}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn options(cache: &Path, endpoint: &str) -> HubOptions {
    let mut o = HubOptions::new(cache);
    o.endpoint = endpoint.to_string();
    o.read_timeout = Duration::from_secs(10);
    o
}

fn fetch(spec: &str, opts: &HubOptions) -> flint::Result<PathBuf> {
    hub::fetch(spec, opts, &mut |_| {})
}

fn remote(spec: &str, opts: &HubOptions) -> hub::Remote {
    match hub::parse_spec(spec, opts).unwrap() {
        Source::Remote(r) => r,
        Source::Local(p) => panic!("{spec} parsed as the local path {}", p.display()),
    }
}

const N: usize = 300_000;

#[test]
fn a_url_is_downloaded_with_the_right_bytes_and_sha() {
    let data = model_bytes(N, 1);
    let served = data.clone();
    let server = Server::start(move |_, _| response(200, &[], &served));
    let cache = temp_cache("url");
    let mut opts = options(&cache, "http://unused.invalid");
    opts.sha256 = Some(sha256(&data).to_uppercase());
    let url = format!("{}/files/dir/model.gguf", server.base);
    let mut events = Vec::new();
    let path = hub::fetch(&url, &opts, &mut |e| {
        events.push(match e {
            hub::Event::Started { from, total, .. } => format!("start {from} {total:?}"),
            hub::Event::Bytes { done } => format!("{done}"),
            hub::Event::Waiting { .. } => "wait".into(),
        })
    })
    .unwrap();
    let port = server.base.rsplit(':').next().unwrap();
    assert_eq!(
        path,
        cache
            .join("models/url")
            .join(format!("127.0.0.1_{port}"))
            .join("files/dir/model.gguf")
    );
    assert!(std::fs::read(&path).unwrap() == data, "bytes differ");
    assert!(
        !remote(&url, &opts).part_path().exists(),
        ".part left behind"
    );
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/files/dir/model.gguf");
    assert_eq!(reqs[0].header("range"), None);
    assert_eq!(reqs[0].header("authorization"), None);
    assert_eq!(
        events.first().map(String::as_str),
        Some("start 0 Some(300000)")
    );
    assert_eq!(events.last().map(String::as_str), Some("300000"));
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn hf_specs_map_to_the_resolve_url_of_their_revision() {
    let data = model_bytes(N, 2);
    let sha = sha256(&data);
    let served = data.clone();
    // Hugging Face's answer for an LFS file: the sha256 as X-Linked-Etag and a quoted ETag
    let server = Server::start(move |_, _| {
        let tag = format!("\"{}\"", sha256(&served));
        response(
            200,
            &[("X-Linked-Etag", tag.clone()), ("ETag", tag)],
            &served,
        )
    });
    let cache = temp_cache("hf");
    let opts = options(&cache, &format!("{}/", server.base));

    let p1 = fetch("hf:Owner/Repo-GGUF/model.Q4_K_M.gguf", &opts).unwrap();
    let p2 = fetch("hf:Owner/Repo-GGUF@v1.0/sub dir/m.gguf", &opts).unwrap();
    let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/Owner/Repo-GGUF/resolve/main/model.Q4_K_M.gguf",
            "/Owner/Repo-GGUF/resolve/v1.0/sub%20dir/m.gguf"
        ]
    );
    assert_eq!(
        p1,
        cache.join("models/hf/Owner/Repo-GGUF/main/model.Q4_K_M.gguf")
    );
    assert_eq!(
        p2,
        cache.join("models/hf/Owner/Repo-GGUF/v1.0/sub dir/m.gguf")
    );
    assert_eq!(sha256(&std::fs::read(&p1).unwrap()), sha);
    assert_eq!(sha256(&std::fs::read(&p2).unwrap()), sha);
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn a_wrong_linked_etag_is_a_sha_mismatch() {
    let data = model_bytes(N, 3);
    let other = sha256(&model_bytes(N, 4));
    let server = Server::start(move |_, _| {
        response(200, &[("X-Linked-Etag", format!("\"{other}\""))], &data)
    });
    let cache = temp_cache("etag");
    let opts = options(&cache, &server.base);
    let spec = "hf:o/r/m.gguf";
    let err = fetch(spec, &opts).unwrap_err().to_string();
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(
        err.contains(&format!("{}/o/r/resolve/main/m.gguf", server.base)),
        "{err}"
    );
    let r = remote(spec, &opts);
    assert!(!r.path.exists() && !r.part_path().exists());
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn a_cached_file_is_returned_without_a_request() {
    let data = model_bytes(N, 5);
    let served = data.clone();
    let server = Server::start(move |_, _| response(200, &[], &served));
    let cache = temp_cache("cached");
    let mut opts = options(&cache, &server.base);
    let spec = "hf:o/r/m.gguf";
    let first = fetch(spec, &opts).unwrap();
    assert_eq!(server.requests().len(), 1);
    // the cache is trusted as it is: no request, even to check
    opts.sha256 = Some(sha256(&data));
    let second = fetch(spec, &opts).unwrap();
    assert_eq!(first, second);
    assert_eq!(server.requests().len(), 1, "a cache hit made a request");
    // with a sha256 given, the cached file is hashed, and a wrong one is an error
    opts.sha256 = Some("0".repeat(64));
    let err = fetch(spec, &opts).unwrap_err().to_string();
    assert!(err.contains("cached") && err.contains("--refresh"), "{err}");
    assert_eq!(server.requests().len(), 1);
    // --refresh downloads again
    opts.sha256 = None;
    opts.refresh = true;
    std::fs::write(&first, b"stale").unwrap();
    fetch(spec, &opts).unwrap();
    assert_eq!(server.requests().len(), 2);
    assert!(std::fs::read(&first).unwrap() == data);
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn a_part_file_is_resumed_with_a_range_request() {
    let data = model_bytes(N, 6);
    let served = data.clone();
    let server = Server::start(move |req, _| {
        let tag = format!("\"{}\"", sha256(&served));
        serve_range(req, &served, &[("X-Linked-Etag", tag)])
    });
    let cache = temp_cache("resume");
    let opts = options(&cache, &server.base);
    let spec = "hf:o/r/m.gguf";
    let r = remote(spec, &opts);
    let half = 123_457;
    std::fs::create_dir_all(r.part_path().parent().unwrap()).unwrap();
    std::fs::write(r.part_path(), &data[..half]).unwrap();
    let mut from = None;
    let path = hub::fetch(spec, &opts, &mut |e| {
        if let hub::Event::Started { from: f, .. } = e {
            from = Some(f)
        }
    })
    .unwrap();
    assert_eq!(from, Some(half as u64));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].header("range"),
        Some(format!("bytes={half}-").as_str())
    );
    assert!(
        std::fs::read(&path).unwrap() == data,
        "resumed file differs"
    );
    assert!(!r.part_path().exists());
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn a_server_ignoring_range_restarts_the_download() {
    let data = model_bytes(N, 7);
    let served = data.clone();
    let server = Server::start(move |_, _| response(200, &[], &served));
    let cache = temp_cache("norange");
    let opts = options(&cache, &server.base);
    let url = format!("{}/m.gguf", server.base);
    let r = remote(&url, &opts);
    std::fs::create_dir_all(r.part_path().parent().unwrap()).unwrap();
    // a .part that would corrupt the file if the 200 body were appended to it
    std::fs::write(r.part_path(), vec![0xAA; 1000]).unwrap();
    let path = fetch(&url, &opts).unwrap();
    assert_eq!(server.requests()[0].header("range"), Some("bytes=1000-"));
    assert!(std::fs::read(&path).unwrap() == data);
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn a_complete_part_answered_416_is_downloaded_again() {
    let data = model_bytes(N, 8);
    let served = data.clone();
    let server = Server::start(move |req, _| serve_range(req, &served, &[]));
    let cache = temp_cache("416");
    let opts = options(&cache, &server.base);
    let url = format!("{}/m.gguf", server.base);
    let r = remote(&url, &opts);
    std::fs::create_dir_all(r.part_path().parent().unwrap()).unwrap();
    std::fs::write(r.part_path(), vec![0x55; N]).unwrap();
    let path = fetch(&url, &opts).unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[0].header("range"),
        Some(format!("bytes={N}-").as_str())
    );
    assert_eq!(reqs[1].header("range"), None);
    assert!(std::fs::read(&path).unwrap() == data);
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn a_stale_part_is_discarded_when_the_sha_does_not_match() {
    let data = model_bytes(N, 9);
    let served = data.clone();
    let server = Server::start(move |req, _| serve_range(req, &served, &[]));
    let cache = temp_cache("stale");
    let mut opts = options(&cache, &server.base);
    opts.sha256 = Some(sha256(&data));
    let url = format!("{}/m.gguf", server.base);
    let r = remote(&url, &opts);
    std::fs::create_dir_all(r.part_path().parent().unwrap()).unwrap();
    // the first half of some other version of the file
    std::fs::write(r.part_path(), &model_bytes(N, 10)[..N / 2]).unwrap();
    let path = fetch(&url, &opts).unwrap();
    let ranges: Vec<Option<String>> = server
        .requests()
        .iter()
        .map(|q| q.header("range").map(str::to_string))
        .collect();
    assert_eq!(ranges, [Some(format!("bytes={}-", N / 2)), None]);
    assert!(std::fs::read(&path).unwrap() == data);
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn a_truncated_body_is_an_error_and_the_next_try_resumes() {
    let data = model_bytes(N, 11);
    let served = data.clone();
    let cut = 100_000;
    let server = Server::start(move |req, i| {
        if i == 0 {
            // announce all of it, send a third, hang up
            response(200, &[("Content-Length", N.to_string())], &served[..cut])
        } else {
            serve_range(req, &served, &[])
        }
    });
    let cache = temp_cache("truncated");
    let opts = options(&cache, &server.base);
    let url = format!("{}/m.gguf", server.base);
    let r = remote(&url, &opts);
    let err = fetch(&url, &opts).unwrap_err().to_string();
    assert!(
        err.contains(&url) && err.contains(&format!("of {N} bytes")),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    assert!(!r.path.exists(), "a truncated download became the file");
    let kept = std::fs::metadata(r.part_path()).unwrap().len();
    assert!(kept > 0 && kept <= cut as u64, "kept {kept}");
    let path = fetch(&url, &opts).unwrap();
    assert_eq!(
        server.requests()[1].header("range"),
        Some(format!("bytes={kept}-").as_str())
    );
    assert!(std::fs::read(&path).unwrap() == data);
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn a_sha_mismatch_deletes_the_part() {
    let data = model_bytes(N, 12);
    let server = Server::start(move |_, _| response(200, &[], &data));
    let cache = temp_cache("mismatch");
    let mut opts = options(&cache, &server.base);
    let want = sha256(b"something else");
    opts.sha256 = Some(want.clone());
    let url = format!("{}/m.gguf", server.base);
    let err = fetch(&url, &opts).unwrap_err().to_string();
    assert!(
        err.contains("sha256 mismatch") && err.contains(&want),
        "{err}"
    );
    assert!(err.contains(&url), "{err}");
    let r = remote(&url, &opts);
    assert!(!r.path.exists(), "a file with the wrong sha was kept");
    assert!(
        !r.part_path().exists(),
        "the .part of a wrong file was kept"
    );
    // a malformed sha256 is refused before any request
    opts.sha256 = Some("abc".into());
    let err = fetch(&url, &opts).unwrap_err().to_string();
    assert!(err.contains("64 hexadecimal"), "{err}");
    assert_eq!(server.requests().len(), 1);
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn http_errors_name_the_problem_and_the_url() {
    let server = Server::start(|req, _| match req.path.as_str() {
        "/o/r/resolve/main/gone.gguf" => response(404, &[], b"Entry not found"),
        "/o/gated/resolve/main/m.gguf" => response(403, &[], b"Access denied"),
        "/o/private/resolve/main/m.gguf" => response(401, &[], b"Unauthorized"),
        _ => response(503, &[], b"busy"),
    });
    let cache = temp_cache("status");
    let mut opts = options(&cache, &server.base);
    let cases = [
        ("hf:o/r/gone.gguf", "not found: "),
        ("hf:o/gated/m.gguf", "needs access: "),
        ("hf:o/private/m.gguf", "needs access: "),
        ("hf:o/busy/m.gguf", "try again later"),
    ];
    for (spec, want) in cases {
        let err = fetch(spec, &opts).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, flint::Error::Download(_)), "{text}");
        assert!(text.contains(want), "{spec}: {text}");
        assert!(text.contains(&remote(spec, &opts).url), "{text}");
        if want == "needs access: " {
            assert!(text.contains("set HF_TOKEN"), "{text}");
        }
    }
    opts.token = Some("hf_wrong".into());
    let text = fetch("hf:o/gated/m.gguf", &opts).unwrap_err().to_string();
    assert!(text.contains("refused the token in HF_TOKEN"), "{text}");
    assert!(
        !cache.join("models").exists(),
        "failed downloads left files or folders under models/"
    );
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn the_token_goes_to_the_endpoint_only() {
    let data = model_bytes(N, 13);
    let sha = sha256(&data);
    let served = data.clone();
    let cdn = Server::start(move |_, _| response(200, &[], &served));
    let cdn_base = cdn.base.clone();
    let size = N.to_string();
    // the endpoint: a relative redirect on its own host, then one to the CDN with the file's
    // sha256 and size, as Hugging Face answers for LFS files
    let hub_server = Server::start(move |req, _| {
        if req.path.starts_with("/o/r/resolve/") {
            response(302, &[("Location", "/api/m.gguf".to_string())], b"")
        } else {
            response(
                302,
                &[
                    ("Location", format!("{cdn_base}/signed/m.gguf?sig=1")),
                    ("X-Linked-Etag", format!("\"{sha}\"")),
                    ("X-Linked-Size", size.clone()),
                ],
                b"",
            )
        }
    });
    let cache = temp_cache("token");
    let mut opts = options(&cache, &hub_server.base);
    opts.token = Some("hf_secret".into());
    let path = fetch("hf:o/r/m.gguf", &opts).unwrap();
    assert!(std::fs::read(&path).unwrap() == data);
    let hub_reqs = hub_server.requests();
    let paths: Vec<&str> = hub_reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/o/r/resolve/main/m.gguf", "/api/m.gguf"]);
    for r in &hub_reqs {
        assert_eq!(
            r.header("authorization"),
            Some("Bearer hf_secret"),
            "{}",
            r.path
        );
    }
    let cdn_reqs = cdn.requests();
    assert_eq!(cdn_reqs.len(), 1);
    assert_eq!(cdn_reqs[0].path, "/signed/m.gguf?sig=1");
    assert_eq!(
        cdn_reqs[0].header("authorization"),
        None,
        "token sent to the CDN"
    );
    // a URL on another host never gets the token either
    fetch(&format!("{}/direct/m.gguf", cdn.base), &opts).unwrap();
    assert_eq!(cdn.requests()[1].header("authorization"), None);
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn a_second_process_waits_for_the_lock_then_uses_the_file() {
    let data = model_bytes(N, 14);
    let served = data.clone();
    let server = Server::start(move |_, _| response(200, &[], &served));
    let cache = temp_cache("lock");
    let opts = options(&cache, &server.base);
    let url = format!("{}/m.gguf", server.base);
    let r = remote(&url, &opts);
    // another "process" holds the lock while it downloads
    std::fs::create_dir_all(r.lock.parent().unwrap()).unwrap();
    let held = std::fs::File::create(&r.lock).unwrap();
    held.lock().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = {
        let (url, opts) = (url.clone(), opts.clone());
        std::thread::spawn(move || {
            hub::fetch(&url, &opts, &mut |e| {
                if let hub::Event::Waiting { .. } = e {
                    tx.send(()).unwrap();
                }
            })
        })
    };
    rx.recv_timeout(Duration::from_secs(10))
        .expect("no Waiting event while the lock was held");
    assert!(server.requests().is_empty(), "downloaded without the lock");
    // it finishes the file and lets go: the waiter takes the file without a request
    std::fs::create_dir_all(r.path.parent().unwrap()).unwrap();
    std::fs::write(&r.path, &data).unwrap();
    drop(held);
    assert_eq!(waiter.join().unwrap().unwrap(), r.path);
    assert!(server.requests().is_empty());
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn a_refused_connection_is_an_error_naming_the_url() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cache = temp_cache("refused");
    let opts = options(&cache, "http://unused.invalid");
    let url = format!("http://127.0.0.1:{port}/m.gguf");
    let err = fetch(&url, &opts).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, flint::Error::Download(_)), "{text}");
    assert!(
        text.contains("cannot fetch") && text.contains(&url),
        "{text}"
    );
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn specs_and_cache_paths() {
    let opts = HubOptions::new("/c");
    for local in [
        "models/x.gguf",
        "/abs/x.gguf",
        "tests/fixtures/hf/tiny-llama",
        "hf/x",
    ] {
        assert_eq!(
            hub::parse_spec(local, &opts).unwrap(),
            Source::Local(PathBuf::from(local))
        );
        assert!(!hub::is_remote(local));
    }
    for bad in [
        "hf:owner/repo",
        "hf:owner",
        "hf:o/r/../../etc/passwd",
        "hf:o/r@/m.gguf",
        "hf:o/r/a//b.gguf",
        "hf:../r/m.gguf",
        "http://host/dir/",
        "http:///m.gguf",
        "https://host/a/../m.gguf",
    ] {
        let err = hub::parse_spec(bad, &opts).unwrap_err();
        assert!(
            matches!(err, flint::Error::InvalidArgument(_)),
            "{bad}: {err}"
        );
    }
    let r = remote("hf:o/r@0123abc/deep/er/m.gguf", &opts);
    assert_eq!(
        r.url,
        "https://huggingface.co/o/r/resolve/0123abc/deep/er/m.gguf"
    );
    assert_eq!(r.path, Path::new("/c/models/hf/o/r/0123abc/deep/er/m.gguf"));
    assert_eq!(
        r.lock,
        Path::new("/c/locks/hf/o/r/0123abc/deep/er/m.gguf.lock")
    );
    let r = remote("HTTPS://Example.com:8443/a/b.gguf", &opts);
    assert_eq!(r.path, Path::new("/c/models/url/example.com_8443/a/b.gguf"));
    // the query is part of the cache key, as a folder
    let a = remote("https://example.com/a/b.gguf?v=1", &opts);
    let b = remote("https://example.com/a/b.gguf?v=2", &opts);
    assert_ne!(a.path, b.path);
    assert_eq!(a.path.file_name(), b.path.file_name());
    let mut o = HubOptions::new("/c");
    o.endpoint = "ftp://mirror".into();
    assert!(hub::parse_spec("hf:o/r/m.gguf", &o).is_err());
}

#[test]
fn options_come_from_the_environment_variables() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    let o = HubOptions::from_vars(vars(&[
        ("FLINT_CACHE", "/fc"),
        ("XDG_CACHE_HOME", "/xdg"),
        ("HOME", "/home/u"),
        ("HF_ENDPOINT", "http://mirror:8080"),
        ("HF_TOKEN", "hf_abc"),
    ]))
    .unwrap();
    assert_eq!(o.cache_dir, Path::new("/fc"));
    assert_eq!(o.endpoint, "http://mirror:8080");
    assert_eq!(o.token.as_deref(), Some("hf_abc"));
    let o = HubOptions::from_vars(vars(&[
        ("FLINT_CACHE", ""),
        ("XDG_CACHE_HOME", "/xdg"),
        ("HOME", "/home/u"),
        ("HF_TOKEN_PATH", "/nonexistent/token"),
    ]))
    .unwrap();
    assert_eq!(o.cache_dir, Path::new("/xdg/flint"));
    assert_eq!(o.endpoint, hub::DEFAULT_ENDPOINT);
    assert_eq!(o.token, None);
    let o = HubOptions::from_vars(vars(&[("HOME", "/home/u")])).unwrap();
    assert_eq!(o.cache_dir, Path::new("/home/u/.cache/flint"));
    assert!(HubOptions::from_vars(|_| None).is_err());
    // the token huggingface_hub's login saved
    let dir = temp_cache("token-file");
    std::fs::write(dir.join("token"), "hf_saved\n").unwrap();
    let home = dir.to_str().unwrap().to_string();
    let o = HubOptions::from_vars(|k| {
        (k == "HF_HOME")
            .then(|| home.clone())
            .or_else(|| (k == "FLINT_CACHE").then(|| "/fc".to_string()))
    })
    .unwrap();
    assert_eq!(o.token.as_deref(), Some("hf_saved"));
    std::fs::remove_dir_all(&dir).ok();
}

/// `flint pull` and `flint info -m hf:...` as a user runs them, with the environment pointing at
/// a local server and a temporary cache.
#[test]
fn the_cli_pulls_and_loads_through_the_cache() {
    let gguf = std::fs::read("tests/fixtures/arch/gpt2/gpt2-q8_0.gguf").unwrap();
    let sha = sha256(&gguf);
    let served = gguf.clone();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let server = Server::start(move |req, _| {
        counter.fetch_add(1, Ordering::SeqCst);
        if req.path == "/o/tiny/resolve/main/gpt2-q8_0.gguf" {
            response(200, &[("X-Linked-Etag", format!("\"{sha}\""))], &served)
        } else {
            response(404, &[], b"Entry not found")
        }
    });
    let cache = temp_cache("cli");
    let flint = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_flint"))
            .args(args)
            .env("FLINT_CACHE", &cache)
            .env("HF_ENDPOINT", &server.base)
            .env_remove("HF_TOKEN")
            .env_remove("FLINT_MODEL")
            .env(
                "XDG_RUNTIME_DIR",
                std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into()),
            )
            .output()
            .expect("run flint");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let spec = "hf:o/tiny/gpt2-q8_0.gguf";
    let (code, out, err) = flint(&["pull", spec, "--sha256", &sha256(&gguf)]);
    assert_eq!(code, 0, "{err}");
    let path = PathBuf::from(out.trim_end());
    assert_eq!(path, cache.join("models/hf/o/tiny/main/gpt2-q8_0.gguf"));
    assert!(std::fs::read(&path).unwrap() == gguf);
    assert!(err.contains("downloading"), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // -m takes the same spec: loaded from the cache, no request
    let (code, out, err) = flint(&["info", "-m", spec, "--quiet"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("architecture: gpt2"), "{out}");
    assert!(out.contains(path.to_str().unwrap()), "{out}");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "info made a request");

    // --quiet: only the path, on stdout
    let (code, out, err) = flint(&["pull", spec, "--quiet"]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(out.trim_end(), path.to_str().unwrap());

    let (code, _, err) = flint(&["pull", "hf:o/tiny/missing.gguf"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("not found: ") && err.contains("/o/tiny/resolve/main/missing.gguf"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let (code, _, err) = flint(&["info", "-m", "hf:o/tiny/missing.gguf", "--quiet"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("not found: ") && !err.contains("panicked"),
        "{err}"
    );
    let (code, _, err) = flint(&["pull", "hf:o/tiny"]);
    assert_eq!(code, 1);
    assert!(err.contains("expected hf:OWNER/REPO"), "{err}");
    // a local path keeps its old error
    let (code, _, err) = flint(&["info", "-m", "no/such/model.gguf", "--quiet"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("model file no/such/model.gguf not found"),
        "{err}"
    );
    std::fs::remove_dir_all(&cache).ok();
}
