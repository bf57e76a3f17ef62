//! Downloading model files (`flint::hub`, `flint pull`, `-m hf:...`) against HTTP servers started
//! here on 127.0.0.1: well-behaved ones, ones that answer as the Hugging Face Hub does (the commit
//! in `X-Repo-Commit`, LFS files redirected to a CDN), and ones that misbehave on purpose (ignore
//! Range, close early, send the wrong bytes, refuse); and Hugging Face caches laid out here as
//! huggingface_hub lays them out. The library is driven through `HubOptions` (endpoint, caches,
//! token), never the process environment; the CLI test sets the environment of the child.

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

/// The Hugging Face cache of the tests' options: `huggingface/hub` under the test's folder.
fn hf_cache(cache: &Path) -> PathBuf {
    cache.join("huggingface").join("hub")
}

fn options(cache: &Path, endpoint: &str) -> HubOptions {
    let mut o = HubOptions::new(cache);
    o.hf_cache = Some(hf_cache(cache));
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

fn hf_file(spec: &str, opts: &HubOptions) -> hub::HfFile {
    remote(spec, opts)
        .hf
        .expect("an hf: spec with a Hugging Face cache")
}

/// Commits as the Hub names them.
const COMMIT: &str = "4f1c2a9e0b7d3c5a6e8f9a0b1c2d3e4f5a6b7c8d";
const COMMIT2: &str = "aa0bb1cc2dd3ee4ff5009a8b7c6d5e4f3a2b1c0d";

/// The headers the Hub sends with a file of commit `commit`: `X-Repo-Commit` and, for an LFS file
/// (`sha` given), its sha256 as `X-Linked-Etag` and `ETag`.
fn hub_headers(commit: &str, sha: Option<&str>) -> Vec<(&'static str, String)> {
    let mut h = vec![("X-Repo-Commit", commit.to_string())];
    if let Some(sha) = sha {
        h.push(("X-Linked-Etag", format!("\"{sha}\"")));
        h.push(("ETag", format!("\"{sha}\"")));
    }
    h
}

/// The file a symlink points at, as written (relative or not).
fn link_of(path: &Path) -> PathBuf {
    std::fs::read_link(path).unwrap_or_else(|e| panic!("{} is no symlink: {e}", path.display()))
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
    // the Hub's answer for an LFS file served by the endpoint itself: the commit the revision is
    // at, the sha256 as X-Linked-Etag and a quoted ETag
    let server = Server::start(move |req, _| {
        let commit = if req.path.contains("/resolve/v1.0/") {
            COMMIT2
        } else {
            COMMIT
        };
        response(200, &hub_headers(commit, Some(&sha256(&served))), &served)
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
    let repo = hf_cache(&cache).join("models--Owner--Repo-GGUF");
    assert_eq!(
        p1,
        repo.join("snapshots")
            .join(COMMIT)
            .join("model.Q4_K_M.gguf")
    );
    assert_eq!(
        p2,
        repo.join("snapshots").join(COMMIT2).join("sub dir/m.gguf")
    );
    // one blob for both: the same bytes, the same ETag
    assert_eq!(link_of(&p1), Path::new("../..").join("blobs").join(&sha));
    assert_eq!(link_of(&p2), Path::new("../../..").join("blobs").join(&sha));
    assert_eq!(sha256(&std::fs::read(&p1).unwrap()), sha);
    assert_eq!(sha256(&std::fs::read(&p2).unwrap()), sha);
    let read = |p: &str| std::fs::read_to_string(repo.join(p)).unwrap();
    assert_eq!(read("refs/main"), COMMIT);
    assert_eq!(read("refs/v1.0"), COMMIT2);
    assert!(
        !cache.join("models").exists(),
        "an hf: download went to flint's own cache"
    );
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn a_wrong_linked_etag_is_a_sha_mismatch() {
    let data = model_bytes(N, 3);
    let other = sha256(&model_bytes(N, 4));
    let tag = other.clone();
    let server = Server::start(move |_, _| response(200, &hub_headers(COMMIT, Some(&tag)), &data));
    let cache = temp_cache("etag");
    let opts = options(&cache, &server.base);
    let spec = "hf:o/r/m.gguf";
    let err = fetch(spec, &opts).unwrap_err().to_string();
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(
        err.contains(&format!("{}/o/r/resolve/main/m.gguf", server.base)),
        "{err}"
    );
    // no blob, no partial blob, no snapshot, no ref
    let hf = hf_file(spec, &opts);
    let blob = hf.blob_path(&other);
    assert!(!blob.exists() && !blob.with_extension("incomplete").exists());
    assert!(!hf.snapshot_path(COMMIT).exists());
    assert!(!hf.repo_dir().join("refs").exists());
    assert_eq!(hf.cached(), None);
    std::fs::remove_dir_all(&cache).ok();
}

/// A server that sends no commit or ETag is not the Hub: its `hf:` file goes to flint's own cache.
#[test]
fn a_cached_file_is_returned_without_a_request() {
    let data = model_bytes(N, 5);
    let served = data.clone();
    let server = Server::start(move |_, _| response(200, &[], &served));
    let cache = temp_cache("cached");
    let mut opts = options(&cache, &server.base);
    let spec = "hf:o/r/m.gguf";
    let first = fetch(spec, &opts).unwrap();
    assert_eq!(first, cache.join("models/hf/o/r/main/m.gguf"));
    assert!(!hf_cache(&cache).exists());
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

/// The Hub's way with an LFS file: the endpoint redirects to a CDN, with the commit and the
/// file's sha256 and size on the redirect; the CDN serves the bytes.
fn hub_with_cdn(data: Vec<u8>) -> (Server, Server) {
    let sha = sha256(&data);
    let size = data.len().to_string();
    let cdn = Server::start(move |req, _| serve_range(req, &data, &[]));
    let cdn_base = cdn.base.clone();
    let hub_server = Server::start(move |req, _| {
        let mut h = hub_headers(COMMIT, Some(&sha));
        h.push(("X-Linked-Size", size.clone()));
        h.push(("Location", format!("{cdn_base}/blobs/{sha}?sig=1")));
        if req.path.contains("/resolve/") {
            response(302, &h, b"")
        } else {
            response(404, &[], b"Entry not found")
        }
    });
    (hub_server, cdn)
}

#[test]
fn a_part_file_is_resumed_with_a_range_request() {
    let data = model_bytes(N, 6);
    let sha = sha256(&data);
    let (hub_server, cdn) = hub_with_cdn(data.clone());
    let cache = temp_cache("resume");
    let opts = options(&cache, &hub_server.base);
    let spec = "hf:o/r/m.gguf";
    // what an interrupted download (flint's or huggingface_hub's) left: the blob's first part
    let hf = hf_file(spec, &opts);
    let incomplete = hf.blob_path(&sha).with_extension("incomplete");
    let half = 123_457;
    std::fs::create_dir_all(incomplete.parent().unwrap()).unwrap();
    std::fs::write(&incomplete, &data[..half]).unwrap();
    let mut from = None;
    let path = hub::fetch(spec, &opts, &mut |e| {
        if let hub::Event::Started { from: f, .. } = e {
            from = Some(f)
        }
    })
    .unwrap();
    assert_eq!(from, Some(half as u64));
    // the endpoint is asked once, without a Range; the CDN once, from where the part ends
    let reqs = hub_server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header("range"), None);
    let reqs = cdn.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].header("range"),
        Some(format!("bytes={half}-").as_str())
    );
    assert_eq!(path, hf.snapshot_path(COMMIT));
    assert!(
        std::fs::read(&path).unwrap() == data,
        "resumed file differs"
    );
    assert!(!incomplete.exists());

    // an endpoint that serves the file itself (a small file, or a mirror): its first answer
    // names the blob, and a second request resumes it
    let served = data.clone();
    let tag = sha.clone();
    let direct =
        Server::start(move |req, _| serve_range(req, &served, &hub_headers(COMMIT, Some(&tag))));
    let cache2 = temp_cache("resume-direct");
    let opts = options(&cache2, &direct.base);
    let hf = hf_file(spec, &opts);
    let incomplete = hf.blob_path(&sha).with_extension("incomplete");
    std::fs::create_dir_all(incomplete.parent().unwrap()).unwrap();
    std::fs::write(&incomplete, &data[..half]).unwrap();
    let path = fetch(spec, &opts).unwrap();
    let ranges: Vec<Option<String>> = direct
        .requests()
        .iter()
        .map(|r| r.header("range").map(str::to_string))
        .collect();
    assert_eq!(ranges, [None, Some(format!("bytes={half}-"))]);
    assert!(std::fs::read(&path).unwrap() == data);
    assert!(!incomplete.exists());
    std::fs::remove_dir_all(&cache).ok();
    std::fs::remove_dir_all(&cache2).ok();
}

/// A cache as huggingface_hub lays it out, with `hf:o/r/m.gguf` and `hf:o/r/sub/x.gguf` at
/// `COMMIT`, which `refs/main` names: blobs named by their ETags, relative symlinks to them.
#[cfg(unix)]
fn lay_out_hf_cache(root: &Path, files: &[(&str, &str, &[u8])]) -> PathBuf {
    let repo = root.join("models--o--r");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    for (file, etag, bytes) in files {
        std::fs::write(repo.join("blobs").join(etag), bytes).unwrap();
        let pointer = repo.join("snapshots").join(COMMIT).join(file);
        std::fs::create_dir_all(pointer.parent().unwrap()).unwrap();
        let up = "../".repeat(file.split('/').count() + 1);
        std::os::unix::fs::symlink(format!("{up}blobs/{etag}"), &pointer).unwrap();
    }
    repo
}

#[test]
#[cfg(unix)]
fn a_huggingface_hub_cache_is_used_without_a_request() {
    let (a, b) = (model_bytes(N, 20), model_bytes(1000, 21));
    let (sha_a, sha_b) = (sha256(&a), sha256(&b));
    let fresh = model_bytes(2000, 22);
    let sha_fresh = sha256(&fresh);
    let served = fresh.clone();
    // the server has only what the broken link below needs; anything else is a 404
    let server = Server::start(move |req, _| match req.path.as_str() {
        "/o/r/resolve/main/gone.gguf" => {
            response(200, &hub_headers(COMMIT, Some(&sha256(&served))), &served)
        }
        _ => response(404, &[], b"Entry not found"),
    });
    let cache = temp_cache("hf-layout");
    let mut opts = options(&cache, &server.base);
    // a small file is named by its git blob id, as the Hub's ETag for it is
    let git_id = "3c1d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d";
    let repo = lay_out_hf_cache(
        &hf_cache(&cache),
        &[
            ("m.gguf", &sha_a, &a),
            ("sub/x.gguf", git_id, &b),
            ("gone.gguf", &sha_fresh, b""),
        ],
    );
    let snapshot = repo.join("snapshots").join(COMMIT);
    // the last link is broken: its blob was deleted
    std::fs::remove_file(repo.join("blobs").join(&sha_fresh)).unwrap();

    for (spec, want) in [
        ("hf:o/r/m.gguf", snapshot.join("m.gguf")),
        ("hf:o/r@main/sub/x.gguf", snapshot.join("sub/x.gguf")),
        (&format!("hf:o/r@{COMMIT}/m.gguf"), snapshot.join("m.gguf")),
    ] {
        assert!(remote(spec, &opts).is_cached(), "{spec}");
        assert_eq!(fetch(spec, &opts).unwrap(), want, "{spec}");
    }
    assert!(server.requests().is_empty(), "a cached file was requested");
    // a given sha256 is checked against the cached file
    opts.sha256 = Some(sha_b.clone());
    fetch("hf:o/r/sub/x.gguf", &opts).unwrap();
    opts.sha256 = Some(sha_a.clone());
    let err = fetch("hf:o/r/sub/x.gguf", &opts).unwrap_err().to_string();
    assert!(
        err.contains("the cached") && err.contains(&sha_b) && err.contains("--refresh"),
        "{err}"
    );
    opts.sha256 = None;
    assert!(server.requests().is_empty());

    // a revision the cache has no ref for is asked for
    let err = fetch("hf:o/r@v2/m.gguf", &opts).unwrap_err().to_string();
    assert!(err.contains("not found: "), "{err}");
    // so is one whose ref is unreadable (a folder here) or names no commit
    std::fs::create_dir_all(repo.join("refs/v3")).unwrap();
    std::fs::write(repo.join("refs/v4"), "../../../elsewhere").unwrap();
    for spec in ["hf:o/r@v3/m.gguf", "hf:o/r@v4/m.gguf"] {
        assert!(!remote(spec, &opts).is_cached(), "{spec}");
        let err = fetch(spec, &opts).unwrap_err().to_string();
        assert!(err.contains("not found: "), "{spec}: {err}");
    }
    assert_eq!(server.requests().len(), 3);

    // a broken link is downloaded again, and the link mended
    let gone = snapshot.join("gone.gguf");
    assert!(!remote("hf:o/r/gone.gguf", &opts).is_cached());
    assert_eq!(fetch("hf:o/r/gone.gguf", &opts).unwrap(), gone);
    assert_eq!(server.requests().len(), 4);
    assert_eq!(link_of(&gone), Path::new("../../blobs").join(&sha_fresh));
    assert!(std::fs::read(&gone).unwrap() == fresh);
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn a_download_writes_the_huggingface_hub_layout() {
    let data = model_bytes(N, 23);
    let sha = sha256(&data);
    let (hub_server, cdn) = hub_with_cdn(data.clone());
    let cache = temp_cache("hf-write");
    let mut opts = options(&cache, &hub_server.base);
    let spec = "hf:o/r/m.gguf";
    let hf = hf_file(spec, &opts);
    let path = fetch(spec, &opts).unwrap();
    assert_eq!(path, hf.snapshot_path(COMMIT));
    assert_eq!(
        path,
        hf_cache(&cache).join(format!("models--o--r/snapshots/{COMMIT}/m.gguf"))
    );
    // refs/main holds the commit X-Repo-Commit named, the blob is named by the ETag (the sha256)
    // and the snapshot is a relative symlink to it
    let repo = hf.repo_dir();
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    assert_eq!(link_of(&path), Path::new("../../blobs").join(&sha));
    assert!(std::fs::read(repo.join("blobs").join(&sha)).unwrap() == data);
    assert_eq!(
        std::fs::canonicalize(&path).unwrap(),
        std::fs::canonicalize(repo.join("blobs").join(&sha)).unwrap()
    );
    let names = |dir: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(repo.join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("blobs"), [sha.as_str()], "partial files left behind");
    // huggingface_hub's lock for the blob
    assert!(hf_cache(&cache)
        .join(format!(".locks/models--o--r/{sha}.lock"))
        .is_file());
    assert_eq!((hub_server.requests().len(), cdn.requests().len()), (1, 1));

    // found again without a request, by branch and by commit
    assert_eq!(fetch(spec, &opts).unwrap(), path);
    assert_eq!(
        fetch(&format!("hf:o/r@{COMMIT}/m.gguf"), &opts).unwrap(),
        path
    );
    assert_eq!((hub_server.requests().len(), cdn.requests().len()), (1, 1));

    // a tag at the same commit: the endpoint is asked, the blob is there, the CDN is not asked
    let tagged = fetch("hf:o/r@v1/m.gguf", &opts).unwrap();
    assert_eq!(tagged, path);
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/v1")).unwrap(),
        COMMIT
    );
    assert_eq!((hub_server.requests().len(), cdn.requests().len()), (2, 1));

    // --refresh downloads the bytes again
    std::fs::write(repo.join("blobs").join(&sha), b"stale").unwrap();
    opts.refresh = true;
    assert_eq!(fetch(spec, &opts).unwrap(), path);
    assert_eq!((hub_server.requests().len(), cdn.requests().len()), (3, 2));
    assert!(std::fs::read(&path).unwrap() == data);
    assert_eq!(names("blobs"), [sha.as_str()]);
    assert!(!cache.join("models").exists());
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn a_small_file_is_named_by_its_git_etag() {
    // what the Hub sends for a file kept in git: the blob id as ETag, no X-Linked-Etag
    let git_id = "a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0";
    let server = Server::start(move |_, _| {
        let h = [
            ("X-Repo-Commit", COMMIT.to_string()),
            ("ETag", format!("\"{git_id}\"")),
        ];
        response(200, &h, b"{\"model_type\": \"llama\"}")
    });
    let cache = temp_cache("hf-git");
    let opts = options(&cache, &server.base);
    let spec = "hf:o/r/nested/dir/config.json";
    let path = fetch(spec, &opts).unwrap();
    let hf = hf_file(spec, &opts);
    assert_eq!(path, hf.snapshot_path(COMMIT));
    assert_eq!(link_of(&path), Path::new("../../../../blobs").join(git_id));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"model_type\": \"llama\"}"
    );
    fetch(spec, &opts).unwrap();
    assert_eq!(server.requests().len(), 1);
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn files_earlier_flint_versions_pulled_are_found() {
    let data = model_bytes(1000, 24);
    let server = Server::start(|_, _| response(500, &[], b"no"));
    let cache = temp_cache("old-cache");
    let opts = options(&cache, &server.base);
    // where flint kept hf: files before it used the Hugging Face cache
    let old = cache.join("models/hf/o/r/main/m.gguf");
    std::fs::create_dir_all(old.parent().unwrap()).unwrap();
    std::fs::write(&old, &data).unwrap();
    assert!(remote("hf:o/r/m.gguf", &opts).is_cached());
    assert_eq!(fetch("hf:o/r/m.gguf", &opts).unwrap(), old);
    assert!(server.requests().is_empty());
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn a_huggingface_hub_lock_is_waited_for() {
    let data = model_bytes(N, 25);
    let sha = sha256(&data);
    let (hub_server, cdn) = hub_with_cdn(data.clone());
    let cache = temp_cache("hf-lock");
    let opts = options(&cache, &hub_server.base);
    let spec = "hf:o/r/m.gguf";
    let hf = hf_file(spec, &opts);
    // huggingface_hub (filelock: flock on Unix) downloads the same blob meanwhile
    let lock = hf_cache(&cache).join(format!(".locks/models--o--r/{sha}.lock"));
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let held = std::fs::File::create(&lock).unwrap();
    held.lock().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = {
        let opts = opts.clone();
        std::thread::spawn(move || {
            hub::fetch(spec, &opts, &mut |e| {
                if let hub::Event::Waiting { .. } = e {
                    tx.send(()).unwrap();
                }
            })
        })
    };
    rx.recv_timeout(Duration::from_secs(10))
        .expect("no Waiting event while the lock was held");
    // it finishes the blob and lets go: the waiter links it without asking the CDN
    std::fs::create_dir_all(hf.repo_dir().join("blobs")).unwrap();
    std::fs::write(hf.blob_path(&sha), &data).unwrap();
    drop(held);
    assert_eq!(waiter.join().unwrap().unwrap(), hf.snapshot_path(COMMIT));
    assert_eq!((hub_server.requests().len(), cdn.requests().len()), (1, 0));
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
        !cache.join("models").exists() && !hf_cache(&cache).exists(),
        "failed downloads left files or folders in a cache"
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
                    ("X-Repo-Commit", COMMIT.to_string()),
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
    assert_eq!(path, hf_file("hf:o/r/m.gguf", &opts).snapshot_path(COMMIT));
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
    assert_eq!(r.hf, None, "a Hugging Face cache nobody asked for");
    // with a Hugging Face cache: huggingface_hub's names
    let mut o = HubOptions::new("/c");
    o.hf_cache = Some("/h".into());
    let r = remote("hf:o/r@0123abc/deep/er/m.gguf", &o);
    assert_eq!(r.path, Path::new("/c/models/hf/o/r/0123abc/deep/er/m.gguf"));
    let hf = r.hf.clone().unwrap();
    assert_eq!(
        (hf.repo_id.as_str(), hf.revision.as_str(), hf.file.as_str()),
        ("o/r", "0123abc", "deep/er/m.gguf")
    );
    assert_eq!(hf.repo_dir(), Path::new("/h/models--o--r"));
    assert_eq!(r.destination(), hf.repo_dir());
    assert_eq!(
        hf.snapshot_path(COMMIT),
        Path::new("/h/models--o--r/snapshots")
            .join(COMMIT)
            .join("deep/er/m.gguf")
    );
    assert_eq!(hf.blob_path("abc"), Path::new("/h/models--o--r/blobs/abc"));
    // URLs stay in flint's cache
    assert_eq!(remote("https://example.com/a/b.gguf", &o).hf, None);
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
    assert_eq!(
        o.hf_cache.as_deref(),
        Some(Path::new("/xdg/huggingface/hub"))
    );
    assert_eq!(o.endpoint, "http://mirror:8080");
    assert_eq!(o.token.as_deref(), Some("hf_abc"));
    // the Hugging Face cache, found as huggingface_hub finds it
    let hf = |pairs: &'static [(&'static str, &'static str)]| {
        let var = vars(pairs);
        HubOptions::from_vars(|k| var(k).or_else(|| (k == "FLINT_CACHE").then(|| "/fc".into())))
            .unwrap()
            .hf_cache
    };
    let all: &'static [(&str, &str)] = &[
        ("HF_HUB_CACHE", "/hc"),
        ("HUGGINGFACE_HUB_CACHE", "/legacy"),
        ("HF_HOME", "/hh"),
        ("XDG_CACHE_HOME", "/xdg"),
        ("HOME", "/home/u"),
        ("USERPROFILE", "C:/Users/u"),
    ];
    for (skip, want) in [
        (0, "/hc"),
        (1, "/legacy"),
        (2, "/hh/hub"),
        (3, "/xdg/huggingface/hub"),
        (4, "/home/u/.cache/huggingface/hub"),
        (5, "C:/Users/u/.cache/huggingface/hub"),
    ] {
        assert_eq!(
            hf(&all[skip..]),
            Some(PathBuf::from(want)),
            "{:?}",
            &all[skip..]
        );
    }
    assert_eq!(hf(&[]), None);
    assert_eq!(hf(&[("HF_HUB_CACHE", "")]), None);
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
            response(200, &hub_headers(COMMIT, Some(&sha)), &served)
        } else {
            response(404, &[], b"Entry not found")
        }
    });
    let cache = temp_cache("cli");
    let flint = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_flint"))
            .args(args)
            .env("FLINT_CACHE", &cache)
            .env("HF_HUB_CACHE", hf_cache(&cache))
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
    assert_eq!(
        path,
        hf_cache(&cache).join(format!("models--o--tiny/snapshots/{COMMIT}/gpt2-q8_0.gguf"))
    );
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
