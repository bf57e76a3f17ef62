//! Model files from Hugging Face or any HTTP(S) URL, downloaded once into a local cache.
//!
//! A model spec is one of
//! - `hf:OWNER/REPO/PATH/IN/REPO` or `hf:OWNER/REPO@REVISION/PATH/IN/REPO` (revision: a branch,
//!   tag or commit; default `main`), fetched from `{endpoint}/OWNER/REPO/resolve/REVISION/PATH`
//!   (the endpoint is `https://huggingface.co` unless `HF_ENDPOINT` says otherwise);
//! - an `http://` or `https://` URL;
//! - anything else: a local path, returned as it is.
//!
//! The cache holds `models/hf/OWNER/REPO/REVISION/PATH` and `models/url/HOST[_PORT]/PATH` (a URL
//! with a query string gets one more folder, `q-` and a hash of the query, before the file name).
//! A file there is complete: it is returned without any network request. A download is written to
//! `FILE.part`, resumed with a `Range` request when that exists (a server answering 200 instead of
//! 206 restarts it), checked against the length the server announced and against a sha256 when
//! one is known (the caller's, or the `X-Linked-Etag` / `ETag` Hugging Face sends for LFS files),
//! and only then renamed to `FILE`. A lock file (the same path under `locks/` of the cache, plus
//! `.lock`) keeps two processes from writing the same `.part`.
//!
//! Redirects are followed here rather than by the HTTP client so that every hop's headers are seen
//! (Hugging Face puts the file's sha256 and size on the redirect to its CDN) and so that the token
//! (`HF_TOKEN`) is only ever sent to the endpoint's own scheme, host and port.

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use ureq::http::{HeaderMap, Uri};

/// Where `hf:` specs are fetched from unless `HF_ENDPOINT` names another server.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Most redirects followed for one request.
const MAX_REDIRECTS: usize = 10;

/// Whether this build can speak https (see the TLS note in Cargo.toml: no TLS on Android).
const HAS_TLS: bool = cfg!(not(target_os = "android"));

/// Where files go and how they are fetched. [`HubOptions::from_env`] reads the environment the
/// way the `flint` CLI does; tests and embedders fill the fields themselves.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// Root of the cache (models go under `models/`).
    pub cache_dir: PathBuf,
    /// Hugging Face endpoint for `hf:` specs, e.g. `https://huggingface.co`.
    pub endpoint: String,
    /// Sent as `Authorization: Bearer TOKEN`, only to the endpoint's scheme, host and port.
    pub token: Option<String>,
    /// The file's expected sha256 (64 hex digits); checked after a download and on a cached file.
    pub sha256: Option<String>,
    /// Download again even when the file is cached (and discard any `.part`).
    pub refresh: bool,
    /// Longest wait for any single read from the server before the download is abandoned (the
    /// `.part` is kept for a later resume).
    pub read_timeout: Duration,
}

impl HubOptions {
    /// Options with the given cache root, the default endpoint, no token and no checksum.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        HubOptions {
            cache_dir: cache_dir.into(),
            endpoint: DEFAULT_ENDPOINT.into(),
            token: None,
            sha256: None,
            refresh: false,
            read_timeout: Duration::from_secs(60),
        }
    }

    /// Options from the process environment; see [`HubOptions::from_vars`].
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Options from environment variables read through `var` (empty values count as unset):
    /// the cache is `$FLINT_CACHE`, else `$XDG_CACHE_HOME/flint`, else `$HOME/.cache/flint`, else
    /// `%LOCALAPPDATA%\flint`; the endpoint `$HF_ENDPOINT`; the token `$HF_TOKEN`, else the file
    /// huggingface_hub's login writes (`$HF_TOKEN_PATH`, else `$HF_HOME/token`, else
    /// `~/.cache/huggingface/token`).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |k: &str| var(k).filter(|v| !v.is_empty());
        let cache_dir = if let Some(d) = var("FLINT_CACHE") {
            PathBuf::from(d)
        } else if let Some(d) = var("XDG_CACHE_HOME") {
            PathBuf::from(d).join("flint")
        } else if let Some(h) = var("HOME") {
            PathBuf::from(h).join(".cache").join("flint")
        } else if let Some(d) = var("LOCALAPPDATA") {
            PathBuf::from(d).join("flint")
        } else {
            return Err(Error::InvalidArgument(
                "no directory to cache downloaded models in: set FLINT_CACHE".into(),
            ));
        };
        let mut o = HubOptions::new(cache_dir);
        if let Some(e) = var("HF_ENDPOINT") {
            o.endpoint = e;
        }
        o.token = var("HF_TOKEN").or_else(|| {
            let file = var("HF_TOKEN_PATH").map(PathBuf::from).or_else(|| {
                let home = var("HF_HOME").map(PathBuf::from).or_else(|| {
                    var("XDG_CACHE_HOME")
                        .map(PathBuf::from)
                        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
                        .map(|c| c.join("huggingface"))
                })?;
                Some(home.join("token"))
            })?;
            let t = fs::read_to_string(file).ok()?;
            Some(t.trim().to_string()).filter(|t| !t.is_empty())
        });
        Ok(o)
    }
}

/// What a model spec names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A path on this machine, as given.
    Local(PathBuf),
    /// A file to fetch into the cache.
    Remote(Remote),
}

/// A file on a server and where it lives in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// The URL fetched first (redirects are followed from there).
    pub url: String,
    /// The complete file's path in the cache.
    pub path: PathBuf,
    /// The lock file held while downloading it (`locks/` of the cache, mirroring `models/`).
    pub lock: PathBuf,
}

impl Remote {
    /// Whether the complete file is already in the cache.
    pub fn is_cached(&self) -> bool {
        self.path.is_file()
    }

    /// Where the download in progress is written.
    pub fn part_path(&self) -> PathBuf {
        with_suffix(&self.path, ".part")
    }
}

/// What [`download`] reports as it goes.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// Another process holds the lock on this file; waiting for it to finish.
    Waiting { lock: &'a Path },
    /// The server answered: the transfer starts at byte `from` (non-zero when resuming) of
    /// `total` bytes (None when the server did not say).
    Started {
        url: &'a str,
        from: u64,
        total: Option<u64>,
    },
    /// `done` bytes of the file are on disk.
    Bytes { done: u64 },
}

/// Whether `spec` names a remote file (`hf:` or an http(s) URL) rather than a local path.
pub fn is_remote(spec: &str) -> bool {
    spec.starts_with("hf:") || url_scheme(spec).is_some()
}

fn url_scheme(spec: &str) -> Option<&'static str> {
    let lower = spec.get(..8).unwrap_or(spec).to_ascii_lowercase();
    if lower.starts_with("https://") {
        Some("https")
    } else if lower.starts_with("http://") {
        Some("http")
    } else {
        None
    }
}

/// What `spec` names: a local path, or a remote file with its URL and cache path.
pub fn parse_spec(spec: &str, opts: &HubOptions) -> Result<Source> {
    if let Some(rest) = spec.strip_prefix("hf:") {
        return parse_hf(spec, rest, opts).map(Source::Remote);
    }
    if url_scheme(spec).is_some() {
        return parse_url(spec, opts).map(Source::Remote);
    }
    Ok(Source::Local(PathBuf::from(spec)))
}

fn parse_hf(spec: &str, rest: &str, opts: &HubOptions) -> Result<Remote> {
    let bad = |why: &str| {
        Error::InvalidArgument(format!(
            "model spec `{spec}`: {why} (expected hf:OWNER/REPO[@REVISION]/PATH/IN/REPO)"
        ))
    };
    let mut parts = rest.splitn(3, '/');
    let (owner, repo_rev, file) = match (parts.next(), parts.next(), parts.next()) {
        (Some(o), Some(r), Some(f)) => (o, r, f),
        _ => return Err(bad("no file path in the repository")),
    };
    let (repo, revision) = repo_rev.split_once('@').unwrap_or((repo_rev, "main"));
    for (what, s) in [
        ("owner", owner),
        ("repository", repo),
        ("revision", revision),
    ] {
        if !safe_segment(s) {
            return Err(bad(&format!("bad {what} `{s}`")));
        }
    }
    let segments: Vec<&str> = file.split('/').collect();
    if segments.iter().any(|s| !safe_segment(s)) {
        return Err(bad(&format!("bad path `{file}`")));
    }
    let endpoint = opts.endpoint.trim_end_matches('/');
    if url_scheme(endpoint).is_none() {
        return Err(Error::InvalidArgument(format!(
            "Hugging Face endpoint `{endpoint}` (HF_ENDPOINT) is not an http(s) URL"
        )));
    }
    let encoded: Vec<String> = segments.iter().map(|s| percent_encode(s)).collect();
    let url = format!(
        "{endpoint}/{}/{}/resolve/{}/{}",
        percent_encode(owner),
        percent_encode(repo),
        percent_encode(revision),
        encoded.join("/")
    );
    let mut key = PathBuf::from("hf");
    key.extend([owner, repo, revision]);
    key.extend(segments);
    Ok(remote(url, &key, opts))
}

fn parse_url(spec: &str, opts: &HubOptions) -> Result<Remote> {
    let bad = |why: &str| Error::InvalidArgument(format!("model URL `{spec}`: {why}"));
    let uri: Uri = spec.parse().map_err(|e| bad(&format!("{e}")))?;
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no host"))?;
    let mut host_dir = host
        .trim_matches(|c| c == '[' || c == ']')
        .to_ascii_lowercase()
        .replace(':', "_");
    if let Some(port) = uri.port_u16() {
        host_dir = format!("{host_dir}_{port}");
    }
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    if uri.path().ends_with('/') || segments.is_empty() {
        return Err(bad("it names a folder, not a file"));
    }
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Err(bad("`.` or `..` in the path"));
    }
    let mut key = PathBuf::from("url");
    key.push(host_dir);
    let Some((file, dirs)) = segments.split_last() else {
        return Err(bad("it names a folder, not a file"));
    };
    key.extend(dirs.iter().map(|s| file_name_safe(s)));
    if let Some(q) = uri.query() {
        key.push(format!("q-{}", &hex(&Sha256::digest(q.as_bytes()))[..16]));
    }
    key.push(file_name_safe(file));
    Ok(remote(spec.to_string(), &key, opts))
}

/// The remote file at `url`, cached as `models/KEY` (locked through `locks/KEY.lock`).
fn remote(url: String, key: &Path, opts: &HubOptions) -> Remote {
    Remote {
        url,
        path: opts.cache_dir.join("models").join(key),
        lock: with_suffix(&opts.cache_dir.join("locks").join(key), ".lock"),
    }
}

/// A path segment that is safe as a folder or file name on every platform and in a URL path.
fn safe_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && !s
            .chars()
            .any(|c| c.is_control() || "\\<>:\"|?*/".contains(c))
}

/// A URL path segment as a file name: characters some file systems refuse become `_`.
fn file_name_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || "\\<>:\"|?*".contains(c) {
                '_'
            } else {
                c
            }
        })
        .collect()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A sha256 as 64 lower-case hex digits, or an error naming what was given.
pub fn parse_sha256(s: &str) -> Result<String> {
    let t = s.trim();
    if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(t.to_ascii_lowercase())
    } else {
        Err(Error::InvalidArgument(format!(
            "sha256 `{s}` is not 64 hexadecimal digits"
        )))
    }
}

/// The sha256 an ETag carries, when it is a strong tag of 64 hex digits (Hugging Face's tag for
/// LFS files); None for anything else (git blob ids, MD5s, weak tags).
fn sha_in_etag(v: &str) -> Option<String> {
    let v = v.trim();
    if v.starts_with("W/") {
        return None;
    }
    parse_sha256(v.trim_matches('"')).ok()
}

/// The local path of `spec`: a local path as it is, a remote file from the cache, downloaded
/// first if it is not there (see [`download`]).
pub fn fetch(spec: &str, opts: &HubOptions, on: &mut dyn FnMut(Event)) -> Result<PathBuf> {
    match parse_spec(spec, opts)? {
        Source::Local(p) => Ok(p),
        Source::Remote(r) => download(&r, opts, on),
    }
}

/// Why a transfer failed: a checksum mismatch (retried once from zero when a stale `.part` was
/// resumed) or anything else.
enum Failure {
    Hash(String),
    Other(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Other(e)
    }
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Hash(m) => Error::Download(m),
            Failure::Other(e) => e,
        }
    }
}

/// The cached file of `r`, downloaded first unless it is complete in the cache (and
/// `opts.refresh` is off). With `opts.sha256` a cached file is hashed and must match.
pub fn download(r: &Remote, opts: &HubOptions, on: &mut dyn FnMut(Event)) -> Result<PathBuf> {
    let want = opts.sha256.as_deref().map(parse_sha256).transpose()?;
    if !opts.refresh && r.is_cached() {
        return cached(r, want.as_deref());
    }
    let _lock = lock(&r.lock, on)?;
    if !opts.refresh && r.is_cached() {
        // another process finished it while this one waited for the lock
        return cached(r, want.as_deref());
    }
    let part = r.part_path();
    if opts.refresh {
        remove_if_there(&part)?;
    }
    let agent = agent(opts);
    let resuming = file_len(&part)? > 0;
    match transfer(&agent, r, &part, want.as_deref(), opts, on) {
        // the .part left from before may belong to an older version of the file: start over once
        Err(Failure::Hash(_)) if resuming => {
            Ok(transfer(&agent, r, &part, want.as_deref(), opts, on)?)
        }
        result => Ok(result?),
    }
}

fn cached(r: &Remote, want: Option<&str>) -> Result<PathBuf> {
    if let Some(want) = want {
        let mut h = Sha256::new();
        File::open(&r.path)
            .and_then(|f| hash_into(f, &mut h))
            .map_err(|e| Error::io(&r.path, e))?;
        let got = hex(&h.finalize());
        if got != want {
            return Err(Error::Download(format!(
                "the cached {} has sha256 {got}, not {want} (fetched from {}; \
                 `flint pull --refresh` downloads it again)",
                r.path.display(),
                r.url
            )));
        }
    }
    Ok(r.path.clone())
}

/// Feeds everything `r` yields to `h`.
fn hash_into(mut r: impl Read, h: &mut Sha256) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn lock(path: &Path, on: &mut dyn FnMut(Event)) -> Result<File> {
    create_parent(path)?;
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(fs::TryLockError::WouldBlock) => {
            on(Event::Waiting { lock: path });
            f.lock().map_err(|e| Error::io(path, e))?;
            Ok(f)
        }
        // file systems without locks: go on unlocked
        Err(fs::TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => Ok(f),
        Err(fs::TryLockError::Error(e)) => Err(Error::io(path, e)),
    }
}

fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) => fs::create_dir_all(dir).map_err(|e| Error::io(dir, e)),
        None => Ok(()),
    }
}

fn file_len(path: &Path) -> Result<u64> {
    match fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn remove_if_there(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

fn agent(opts: &HubOptions) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(format!("flint/{}", env!("CARGO_PKG_VERSION")))
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(opts.read_timeout));
    // the OS's TLS and its certificate store (see Cargo.toml)
    #[cfg(any(target_os = "windows", target_os = "macos"))]
    let config = config.tls_config(
        ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::NativeTls)
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build(),
    );
    ureq::Agent::new_with_config(config.build())
}

/// The response at the end of the redirects from one URL, with what the hops said about the file.
struct Reply {
    response: ureq::http::Response<ureq::Body>,
    /// The URL that gave `response`.
    url: String,
    /// Whether the token went with the request that gave `response`.
    sent_token: bool,
    /// sha256 from `X-Linked-Etag` on any hop, or a 64-hex `ETag` from the endpoint itself.
    sha256: Option<String>,
    /// `X-Linked-Size` from any hop.
    size: Option<u64>,
}

fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn same_origin(a: &Uri, b: &Uri) -> bool {
    let key = |u: &Uri| {
        (
            u.scheme_str().map(str::to_ascii_lowercase),
            u.host().map(str::to_ascii_lowercase),
            u.port_u16(),
        )
    };
    key(a) == key(b)
}

/// `location` (absolute, scheme-relative, absolute-path or relative) against `base`.
fn join_location(base: &Uri, location: &str) -> Option<String> {
    if url_scheme(location).is_some() {
        return Some(location.to_string());
    }
    let scheme = base.scheme_str()?;
    if let Some(rest) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{rest}"));
    }
    let authority = base.authority()?.as_str();
    if location.starts_with('/') {
        return Some(format!("{scheme}://{authority}{location}"));
    }
    let path = base.path();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    Some(format!("{scheme}://{authority}{dir}{location}"))
}

/// GET `url` (from byte `from` on when non-zero), following redirects.
fn get(agent: &ureq::Agent, url: &str, from: u64, opts: &HubOptions) -> Result<Reply> {
    let endpoint: Option<Uri> = opts.endpoint.trim_end_matches('/').parse().ok();
    let mut hop = url.to_string();
    let mut sha256 = None;
    let mut size = None;
    for _ in 0..=MAX_REDIRECTS {
        let uri: Uri = hop
            .parse()
            .map_err(|e| Error::Download(format!("bad URL {hop} (from {url}): {e}")))?;
        if uri.scheme_str() == Some("https") && !HAS_TLS {
            return Err(Error::Download(format!(
                "{hop}: this build of flint has no TLS (https); download the file yourself and \
                 pass its path"
            )));
        }
        let at_endpoint = endpoint.as_ref().is_some_and(|e| same_origin(&uri, e));
        let mut request = agent.get(&hop).header("Accept-Encoding", "identity");
        if from > 0 {
            request = request.header("Range", format!("bytes={from}-"));
        }
        let token = opts.token.as_deref().filter(|_| at_endpoint);
        if let Some(t) = token {
            request = request.header("Authorization", format!("Bearer {t}"));
        }
        let response = request.call().map_err(|e| connect_error(url, &hop, e))?;
        let h = response.headers();
        if sha256.is_none() {
            sha256 = header(h, "x-linked-etag").and_then(sha_in_etag);
        }
        if sha256.is_none() && at_endpoint {
            sha256 = header(h, "etag").and_then(sha_in_etag);
        }
        if size.is_none() {
            size = header(h, "x-linked-size").and_then(|v| v.trim().parse().ok());
        }
        let status = response.status().as_u16();
        if matches!(status, 301 | 302 | 303 | 307 | 308) {
            let next = header(h, "location").and_then(|l| join_location(&uri, l.trim()));
            hop = next.ok_or_else(|| {
                Error::Download(format!(
                    "{hop} redirected (HTTP {status}) without a usable Location"
                ))
            })?;
            continue;
        }
        return Ok(Reply {
            response,
            url: hop,
            sent_token: token.is_some(),
            sha256,
            size,
        });
    }
    Err(Error::Download(format!(
        "{url}: more than {MAX_REDIRECTS} redirects"
    )))
}

fn connect_error(url: &str, hop: &str, e: ureq::Error) -> Error {
    let via = if hop == url {
        String::new()
    } else {
        format!(" (redirected to {hop})")
    };
    let hint = match e {
        ureq::Error::HostNotFound => " (offline, or a wrong host or HF_ENDPOINT?)",
        _ => "",
    };
    Error::Download(format!("cannot fetch {url}{via}: {e}{hint}"))
}

fn status_error(url: &str, reply: &Reply, status: u16) -> Error {
    let via = if reply.url == url {
        String::new()
    } else {
        format!(" (redirected to {})", reply.url)
    };
    Error::Download(match status {
        404 | 410 => format!("not found: {url}{via} (HTTP {status})"),
        401 | 403 if reply.sent_token => format!(
            "needs access: {url}{via} (HTTP {status}) refused the token in HF_TOKEN; check that \
             it may read this repository and that you accepted the model's terms on its page"
        ),
        401 | 403 => format!(
            "needs access: {url}{via} (HTTP {status}); if the repository is gated or private, \
             set HF_TOKEN to a token that may read it (and accept the model's terms on its \
             page); if not, check its name"
        ),
        429 | 500..=599 => format!("{url}{via} answered HTTP {status}; try again later"),
        _ => format!("{url}{via} answered HTTP {status}"),
    })
}

/// `Content-Range: bytes START-END/TOTAL` as (START, TOTAL); TOTAL None for `*`.
fn content_range(h: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let v = header(h, "content-range")?.trim();
    let (range, total) = v.strip_prefix("bytes ")?.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start.trim().parse().ok()?, total))
}

/// One download of `r.url` into `part` (resumed from its length when it exists), checked and
/// renamed to `r.path`.
fn transfer(
    agent: &ureq::Agent,
    r: &Remote,
    part: &Path,
    want: Option<&str>,
    opts: &HubOptions,
    on: &mut dyn FnMut(Event),
) -> std::result::Result<PathBuf, Failure> {
    let url = r.url.as_str();
    let fail = |m: String| Failure::Other(Error::Download(m));
    let mut from = file_len(part)?;
    let mut tries = 0;
    let (reply, offset, total) = loop {
        tries += 1;
        let reply = get(agent, url, from, opts)?;
        let status = reply.response.status().as_u16();
        let h = reply.response.headers();
        match status {
            200 => {
                let total = header(h, "content-length").and_then(|v| v.trim().parse().ok());
                break (reply, 0, total);
            }
            206 if from > 0 => match content_range(h) {
                Some((start, total)) if start == from => break (reply, from, total),
                _ => {
                    return Err(fail(format!(
                        "{url}: asked for bytes {from}- and got Content-Range {:?}",
                        header(h, "content-range").unwrap_or("(none)")
                    )))
                }
            },
            // the .part is as long as the file, or longer: start over
            416 if from > 0 && tries == 1 => {
                remove_if_there(part)?;
                from = 0;
            }
            _ => return Err(status_error(url, &reply, status).into()),
        }
    };
    let total = match (total, reply.size) {
        (Some(t), Some(s)) if t != s => {
            return Err(fail(format!(
                "{url}: the server announced {t} bytes but X-Linked-Size says {s}"
            )))
        }
        (t, s) => t.or(s),
    };
    let want = want.map(str::to_string).or(reply.sha256.clone());

    let io_err = |e| Failure::Other(Error::io(part, e));
    create_parent(part)?;
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(part)
        .map_err(io_err)?;
    let mut hasher = want.as_ref().map(|_| Sha256::new());
    if offset == 0 {
        file.set_len(0).map_err(io_err)?;
    } else if let Some(h) = &mut hasher {
        hash_into((&mut file).take(offset), h).map_err(io_err)?;
    }
    file.seek(SeekFrom::Start(offset)).map_err(io_err)?;
    on(Event::Started {
        url,
        from: offset,
        total,
    });

    let mut body = reply.response.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = offset;
    let total_text = total.map_or_else(|| "?".to_string(), |t| t.to_string());
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                file.sync_all().ok();
                return Err(fail(format!(
                    "{url}: the transfer broke off after {done} of {total_text} bytes ({e}); \
                     the part is kept in {}: run the same command again to resume",
                    part.display()
                )));
            }
        };
        file.write_all(&buf[..n]).map_err(io_err)?;
        if let Some(h) = &mut hasher {
            h.update(&buf[..n]);
        }
        done += n as u64;
        on(Event::Bytes { done });
    }
    file.sync_all().map_err(io_err)?;
    drop(file);
    match total {
        Some(t) if done < t => {
            return Err(fail(format!(
                "{url}: truncated: the connection closed after {done} of {t} bytes; the part \
                 is kept in {}: run the same command again to resume",
                part.display()
            )))
        }
        Some(t) if done > t => {
            remove_if_there(part)?;
            return Err(fail(format!(
                "{url}: the server sent {done} bytes, more than the {t} it announced"
            )));
        }
        _ => {}
    }
    if let (Some(want), Some(h)) = (want, hasher) {
        let got = hex(&h.finalize());
        if got != want {
            remove_if_there(part)?;
            return Err(Failure::Hash(format!(
                "{url}: sha256 mismatch: expected {want}, got {got} ({done} bytes); the download \
                 was deleted"
            )));
        }
    }
    fs::rename(part, &r.path).map_err(|e| Error::io(&r.path, e))?;
    Ok(r.path.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_against_the_hop() {
        let base: Uri = "http://a.example:8080/x/y/file.gguf?q=1".parse().unwrap();
        assert_eq!(
            join_location(&base, "https://cdn.example/z").as_deref(),
            Some("https://cdn.example/z")
        );
        assert_eq!(
            join_location(&base, "//cdn.example/z").as_deref(),
            Some("http://cdn.example/z")
        );
        assert_eq!(
            join_location(&base, "/api/z").as_deref(),
            Some("http://a.example:8080/api/z")
        );
        assert_eq!(
            join_location(&base, "other.gguf").as_deref(),
            Some("http://a.example:8080/x/y/other.gguf")
        );
    }

    #[test]
    fn etags_count_only_as_strong_64_hex_tags() {
        let sha = "ab".repeat(32);
        assert_eq!(sha_in_etag(&format!("\"{sha}\"")), Some(sha.clone()));
        assert_eq!(sha_in_etag(&sha.to_uppercase()), Some(sha.clone()));
        assert_eq!(sha_in_etag(&format!("W/\"{sha}\"")), None);
        assert_eq!(
            sha_in_etag("\"0123456789abcdef0123456789abcdef01234567\""),
            None
        );
    }

    #[test]
    fn content_range_is_parsed() {
        let mut h = HeaderMap::new();
        h.insert("content-range", "bytes 100-199/200".parse().unwrap());
        assert_eq!(content_range(&h), Some((100, Some(200))));
        h.insert("content-range", "bytes 100-199/*".parse().unwrap());
        assert_eq!(content_range(&h), Some((100, None)));
        h.insert("content-range", "items 1-2/3".parse().unwrap());
        assert_eq!(content_range(&h), None);
    }
}
