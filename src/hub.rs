//! Model files from Hugging Face or any HTTP(S) URL, downloaded once into a local cache.
//!
//! A model spec is one of
//! - `hf:OWNER/REPO/PATH/IN/REPO` or `hf:OWNER/REPO@REVISION/PATH/IN/REPO` (revision: a branch,
//!   tag or commit; default `main`), fetched from `{endpoint}/OWNER/REPO/resolve/REVISION/PATH`
//!   (the endpoint is `https://huggingface.co` unless `HF_ENDPOINT` says otherwise);
//! - an `http://` or `https://` URL;
//! - anything else: a local path, returned as it is.
//!
//! `hf:` files live in the Hugging Face cache that Python's `huggingface_hub` (`hf download`,
//! `transformers`, ...) and the `hf-hub` crate share: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub` ([`HfFile`] describes its layout). A file is looked up there first (a
//! branch or tag through `refs/REVISION`, a commit directly), then where flint kept it before
//! (`models/hf/OWNER/REPO/REVISION/PATH` of flint's own cache), and only then downloaded: into the
//! Hugging Face cache, as `blobs/ETAG` with a `snapshots/COMMIT/PATH` link to it and
//! `refs/REVISION` naming the commit the endpoint's `X-Repo-Commit` header gave. A server that sends
//! no commit or ETag is not the Hub: its file goes to flint's own cache as before.
//!
//! flint's own cache (`$FLINT_CACHE`, ...) holds URLs as `models/url/HOST[_PORT]/PATH` (a URL with a
//! query string gets one more folder, `q-` and a hash of the query, before the file name).
//!
//! A file found in either cache is complete: it is returned without any network request. A
//! download is written to a partial file (`blobs/ETAG.incomplete`, as huggingface_hub names it and
//! resumes it, or `FILE.part`), resumed with a `Range` request when that exists (a server answering
//! 200 instead of 206 restarts it), checked against the length the server announced and against a
//! sha256 when one is known (the caller's, or the `X-Linked-Etag` / `ETag` Hugging Face sends for
//! LFS files), and only then renamed into place. A lock file keeps two processes from writing the
//! same partial file: huggingface_hub's own (`.locks/models--OWNER--REPO/ETAG.lock` of the Hugging
//! Face cache), or the file's path under `locks/` of flint's cache, plus `.lock`.
//!
//! Redirects are followed here rather than by the HTTP client so that every hop's headers are seen
//! (Hugging Face puts the commit and the file's sha256 and size on the redirect to its CDN, so the
//! request to the CDN can resume the right partial file) and so that the token (`HF_TOKEN`) is only
//! ever sent to the endpoint's own scheme, host and port.

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
    /// Root of flint's own cache (models go under `models/`).
    pub cache_dir: PathBuf,
    /// The Hugging Face cache (huggingface_hub's layout, see [`HfFile`]) where `hf:` files are
    /// looked up first and downloaded to; None keeps them in flint's own cache (`models/hf/`).
    pub hf_cache: Option<PathBuf>,
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
    /// Options with the given cache root, no Hugging Face cache, the default endpoint, no token
    /// and no checksum.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        HubOptions {
            cache_dir: cache_dir.into(),
            hf_cache: None,
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
    /// `%LOCALAPPDATA%\flint`; the Hugging Face cache, as huggingface_hub finds it,
    /// `$HF_HUB_CACHE`, else `$HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, where `HF_HOME` is
    /// `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface` (`~`: `$HOME`,
    /// else `%USERPROFILE%`); the endpoint `$HF_ENDPOINT`; the token `$HF_TOKEN`, else the file
    /// huggingface_hub's login writes (`$HF_TOKEN_PATH`, else `HF_HOME/token`).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |k: &str| var(k).filter(|v| !v.is_empty());
        let hf_home = var("HF_HOME").map(PathBuf::from).or_else(|| {
            var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| {
                    var("HOME")
                        .or_else(|| var("USERPROFILE"))
                        .map(|h| PathBuf::from(h).join(".cache"))
                })
                .map(|c| c.join("huggingface"))
        });
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
        o.hf_cache = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .or_else(|| hf_home.as_ref().map(|h| h.join("hub")));
        if let Some(e) = var("HF_ENDPOINT") {
            o.endpoint = e;
        }
        o.token = var("HF_TOKEN").or_else(|| {
            let file = var("HF_TOKEN_PATH")
                .map(PathBuf::from)
                .or_else(|| hf_home.as_ref().map(|h| h.join("token")))?;
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

/// A file on a server and where it lives in the caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// The URL fetched first (redirects are followed from there).
    pub url: String,
    /// The file's path in flint's own cache: where a URL is downloaded to. For an `hf:` spec,
    /// where flint kept it before it used the Hugging Face cache (still looked up), and where it
    /// goes when there is no Hugging Face cache or the server is not the Hub.
    pub path: PathBuf,
    /// The lock file held while downloading to `path` (`locks/` of the cache, mirroring `models/`).
    pub lock: PathBuf,
    /// For an `hf:` spec, the file in the Hugging Face cache (None without one).
    pub hf: Option<HfFile>,
}

impl Remote {
    /// Whether the complete file is already in a cache (see [`Remote::cached_path`]).
    pub fn is_cached(&self) -> bool {
        self.cached_path().is_some()
    }

    /// The complete file, if a cache has it: the Hugging Face cache's snapshot first, then
    /// `path` in flint's own cache.
    pub fn cached_path(&self) -> Option<PathBuf> {
        self.hf
            .as_ref()
            .and_then(HfFile::cached)
            .or_else(|| self.path.is_file().then(|| self.path.clone()))
    }

    /// Where a download goes: the repository's folder in the Hugging Face cache for an `hf:`
    /// spec, else `path`.
    pub fn destination(&self) -> PathBuf {
        self.hf
            .as_ref()
            .map_or_else(|| self.path.clone(), HfFile::repo_dir)
    }

    /// Where a download to `path` in progress is written.
    pub fn part_path(&self) -> PathBuf {
        with_suffix(&self.path, ".part")
    }

    fn flint_target(&self) -> Target {
        Target {
            file: self.path.clone(),
            part: self.part_path(),
            lock: self.lock.clone(),
        }
    }
}

/// A file of a model repository in the Hugging Face cache, which is laid out as huggingface_hub
/// lays it out (and the `hf-hub` crate, which names, looks up and writes refs here):
/// `CACHE/models--OWNER--REPO/` holds `refs/REVISION` (a file holding the commit a branch or tag
/// was at), `blobs/ETAG` (the file's bytes, named by the ETag the Hub sent: the sha256 of an LFS
/// file, the git blob id of a small one) and `snapshots/COMMIT/PATH`, a relative symlink to
/// `../../blobs/ETAG` (a hard link, or the blob itself, where symlinks are refused). A download in
/// progress is `blobs/ETAG.incomplete`; `CACHE/.locks/models--OWNER--REPO/ETAG.lock` is its lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfFile {
    /// The Hugging Face cache's root (`$HF_HUB_CACHE`, ...).
    pub cache: PathBuf,
    /// `OWNER/REPO`.
    pub repo_id: String,
    /// The branch, tag or commit asked for.
    pub revision: String,
    /// The file's path in the repository, `/`-separated.
    pub file: String,
}

impl HfFile {
    fn cache_repo(&self) -> hf_hub::CacheRepo {
        hf_hub::Cache::new(self.cache.clone()).repo(hf_hub::Repo::with_revision(
            self.repo_id.clone(),
            hf_hub::RepoType::Model,
            self.revision.clone(),
        ))
    }

    fn folder_name(&self) -> String {
        hf_hub::Repo::model(self.repo_id.clone()).folder_name()
    }

    /// The repository's folder, `CACHE/models--OWNER--REPO`.
    pub fn repo_dir(&self) -> PathBuf {
        self.cache.join(self.folder_name())
    }

    /// `snapshots/COMMIT/PATH` in the repository's folder.
    pub fn snapshot_path(&self, commit: &str) -> PathBuf {
        let mut p = self.repo_dir().join("snapshots").join(commit);
        p.extend(self.file.split('/'));
        p
    }

    /// `blobs/ETAG` in the repository's folder.
    pub fn blob_path(&self, etag: &str) -> PathBuf {
        self.repo_dir().join("blobs").join(etag)
    }

    /// The complete file, if the cache has it at this revision: a branch or tag through
    /// `refs/REVISION` (hf-hub's lookup), a commit (40 hex digits) by its snapshot. Whatever does
    /// not lead to a readable file (no ref, a ref that is not a commit, a broken link) counts as
    /// not cached.
    pub fn cached(&self) -> Option<PathBuf> {
        let by_ref = self
            .cache_repo()
            .get(&self.file)
            .filter(|p| self.is_snapshot(p) && p.is_file());
        by_ref.or_else(|| {
            let p = self.snapshot_path(&self.revision);
            (is_commit(&self.revision) && p.is_file()).then_some(p)
        })
    }

    /// Whether `p` is this file's `snapshots/COMMIT/PATH` for a commit id (a ref holding anything
    /// else, a path say, is not followed).
    fn is_snapshot(&self, p: &Path) -> bool {
        p.strip_prefix(self.repo_dir().join("snapshots"))
            .ok()
            .and_then(|rest| rest.components().next())
            .and_then(|c| c.as_os_str().to_str())
            .is_some_and(|c| is_commit(c) && p == self.snapshot_path(c))
    }

    fn target(&self, etag: &str) -> Target {
        let file = self.blob_path(etag);
        Target {
            part: with_suffix(&file, ".incomplete"),
            lock: self
                .cache
                .join(".locks")
                .join(self.folder_name())
                .join(format!("{etag}.lock")),
            file,
        }
    }

    /// Points `snapshots/COMMIT/PATH` at `blobs/ETAG` and, for a branch or tag, `refs/REVISION`
    /// at the commit; the snapshot's path.
    fn link(&self, commit: &str, etag: &str) -> Result<PathBuf> {
        let pointer = self.snapshot_path(commit);
        // from the snapshot's folder up to the repository's folder, then down to the blob
        let mut target = PathBuf::new();
        for _ in 0..=self.file.split('/').count() {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        if fs::read_link(&pointer).ok().as_deref() != Some(target.as_path()) {
            create_parent(&pointer)?;
            remove_if_there(&pointer)?;
            place_link(&target, &self.blob_path(etag), &pointer)
                .map_err(|e| Error::io(&pointer, e))?;
        }
        if self.revision != commit {
            self.cache_repo()
                .create_ref(commit)
                .map_err(|e| Error::io(self.repo_dir().join("refs").join(&self.revision), e))?;
        }
        Ok(pointer)
    }
}

/// A relative symlink at `pointer` to `target` (the blob at `blob`).
#[cfg(unix)]
fn place_link(target: &Path, _blob: &Path, pointer: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, pointer)
}

/// A relative symlink at `pointer` to `target` (the blob at `blob`); where Windows refuses
/// symlinks (no Developer Mode), a hard link to the blob, else the blob itself, moved there (what
/// huggingface_hub does then).
#[cfg(not(unix))]
fn place_link(target: &Path, blob: &Path, pointer: &Path) -> io::Result<()> {
    #[cfg(windows)]
    if std::os::windows::fs::symlink_file(target, pointer).is_ok() {
        return Ok(());
    }
    #[cfg(not(windows))]
    let _ = target;
    fs::hard_link(blob, pointer).or_else(|_| fs::rename(blob, pointer))
}

/// A full commit id as the Hub writes it: 40 lower-case hex digits.
fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Where one download goes: the complete file, the partial file it is written to first, and the
/// lock held meanwhile.
struct Target {
    file: PathBuf,
    part: PathBuf,
    lock: PathBuf,
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
    key.extend(&segments);
    let mut r = remote(url, &key, opts);
    r.hf = opts.hf_cache.as_ref().map(|cache| HfFile {
        cache: cache.clone(),
        repo_id: format!("{owner}/{repo}"),
        revision: revision.to_string(),
        file: segments.join("/"),
    });
    Ok(r)
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
        hf: None,
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

/// The cached file of `r`, downloaded first unless a cache has it complete (and `opts.refresh`
/// is off). With `opts.sha256` a cached file is hashed and must match.
pub fn download(r: &Remote, opts: &HubOptions, on: &mut dyn FnMut(Event)) -> Result<PathBuf> {
    let want = opts.sha256.as_deref().map(parse_sha256).transpose()?;
    let want = want.as_deref();
    if !opts.refresh {
        if let Some(path) = r.cached_path() {
            return check_cached(&path, &r.url, want);
        }
    }
    let agent = agent(opts);
    match &r.hf {
        Some(hf) => download_hf(&agent, r, hf, want, opts, on),
        None => {
            let mut request = |from| get(&agent, &r.url, from, opts);
            fetch_file(&r.flint_target(), &r.url, &mut request, want, opts, on)?;
            Ok(r.path.clone())
        }
    }
}

/// An `hf:` file downloaded into the Hugging Face cache. The endpoint is asked first: its answers
/// (before any redirect to another host) carry the commit and the file's ETag, which name the blob
/// and so the partial file to resume; the request that fetches the bytes (to the CDN, or the
/// endpoint again when it serves the file itself and part of it is on disk) comes after.
fn download_hf(
    agent: &ureq::Agent,
    r: &Remote,
    hf: &HfFile,
    want: Option<&str>,
    opts: &HubOptions,
    on: &mut dyn FnMut(Event),
) -> Result<PathBuf> {
    let (mut first, next, said) = match walk(agent, &r.url, &r.url, 0, opts, Said::default(), true)?
    {
        Hop::Reply(reply) => {
            let status = reply.response.status().as_u16();
            if status != 200 {
                return Err(status_error(&r.url, &reply, status));
            }
            let (next, said) = (reply.url.clone(), reply.said.clone());
            (Some(reply), next, said)
        }
        Hop::Leaving { location, said } => (None, location, said),
    };
    let mut request = |from: u64| match first.take() {
        Some(reply) if from == 0 => Ok(reply),
        _ => match walk(agent, &r.url, &next, from, opts, said.clone(), false)? {
            Hop::Reply(reply) => Ok(reply),
            Hop::Leaving { location, .. } => Err(Error::Download(format!(
                "{}: redirected to {location}",
                r.url
            ))),
        },
    };
    let commit = said
        .commit
        .clone()
        .or_else(|| is_commit(&hf.revision).then(|| hf.revision.clone()));
    let (Some(commit), Some(etag)) = (commit, said.etag.clone()) else {
        // not the Hub's answer (no X-Repo-Commit or ETag): flint's own cache, as before
        fetch_file(&r.flint_target(), &r.url, &mut request, want, opts, on)?;
        return Ok(r.path.clone());
    };
    let _lock = fetch_file(&hf.target(&etag), &r.url, &mut request, want, opts, on)?;
    hf.link(&commit, &etag)
}

/// `target.file`, complete: downloaded through `request` (which GETs the file from the byte it is
/// given on) unless it is there already and `opts.refresh` is off. Returns the lock, still held.
fn fetch_file(
    target: &Target,
    url: &str,
    request: &mut dyn FnMut(u64) -> Result<Reply>,
    want: Option<&str>,
    opts: &HubOptions,
    on: &mut dyn FnMut(Event),
) -> Result<File> {
    let lock = lock(&target.lock, on)?;
    if !opts.refresh && target.file.is_file() {
        // another process finished it while this one waited for the lock, or (a blob) another
        // revision or program downloaded the same bytes
        check_cached(&target.file, url, want)?;
        return Ok(lock);
    }
    if opts.refresh {
        remove_if_there(&target.part)?;
    }
    let resuming = file_len(&target.part)? > 0;
    match transfer(url, request, target, want, on) {
        // the partial file left from before may belong to an older version of the file: start
        // over once
        Err(Failure::Hash(_)) if resuming => transfer(url, request, target, want, on)?,
        result => result?,
    }
    Ok(lock)
}

/// `path`, a complete file in a cache, checked against `want` when given.
fn check_cached(path: &Path, url: &str, want: Option<&str>) -> Result<PathBuf> {
    if let Some(want) = want {
        let mut h = Sha256::new();
        File::open(path)
            .and_then(|f| hash_into(f, &mut h))
            .map_err(|e| Error::io(path, e))?;
        let got = hex(&h.finalize());
        if got != want {
            return Err(Error::Download(format!(
                "the cached {} has sha256 {got}, not {want} (the file of {url}; \
                 `flint pull --refresh` downloads it again)",
                path.display()
            )));
        }
    }
    Ok(path.to_path_buf())
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
    said: Said,
}

/// What the hops of one request said about the file.
#[derive(Debug, Clone, Default)]
struct Said {
    /// sha256 from `X-Linked-Etag` on any hop, or a 64-hex `ETag` from the endpoint itself.
    sha256: Option<String>,
    /// `X-Linked-Size` from any hop.
    size: Option<u64>,
    /// The endpoint's `X-Repo-Commit`: the commit the revision resolved to.
    commit: Option<String>,
    /// The endpoint's `X-Linked-Etag`, else `ETag`, as huggingface_hub names the blob by it.
    etag: Option<String>,
}

impl Said {
    fn hear(&mut self, h: &HeaderMap, at_endpoint: bool) {
        if self.sha256.is_none() {
            self.sha256 = header(h, "x-linked-etag").and_then(sha_in_etag);
        }
        if self.sha256.is_none() && at_endpoint {
            self.sha256 = header(h, "etag").and_then(sha_in_etag);
        }
        if self.size.is_none() {
            self.size = header(h, "x-linked-size").and_then(|v| v.trim().parse().ok());
        }
        if at_endpoint {
            if let Some(c) = header(h, "x-repo-commit").map(str::trim) {
                self.commit = is_commit(c).then(|| c.to_string());
            }
            if let Some(e) = header(h, "x-linked-etag").or_else(|| header(h, "etag")) {
                self.etag = blob_name(e);
            }
        }
    }
}

/// An ETag as huggingface_hub names a blob by it (without `W/` and quotes), when that is a plain
/// file name (letters, digits, `-`, `_`; the Hub's are hex).
fn blob_name(etag: &str) -> Option<String> {
    let t = etag.trim();
    let t = t.strip_prefix("W/").unwrap_or(t).trim_matches('"');
    let plain = t
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (plain && (1..=128).contains(&t.len())).then(|| t.to_string())
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
    match walk(agent, url, url, from, opts, Said::default(), false)? {
        Hop::Reply(reply) => Ok(reply),
        Hop::Leaving { location, .. } => {
            Err(Error::Download(format!("{url}: redirected to {location}")))
        }
    }
}

/// Where a GET ended.
enum Hop {
    Reply(Reply),
    /// The endpoint redirected to another origin, and the walk was asked to stop there.
    Leaving {
        location: String,
        said: Said,
    },
}

/// GET `start` (from byte `from` on when non-zero), following redirects, adding what each hop says
/// to `said`; `url` names the request in errors. With `stop_leaving`, a redirect from the endpoint
/// to another origin is returned, not followed.
fn walk(
    agent: &ureq::Agent,
    url: &str,
    start: &str,
    from: u64,
    opts: &HubOptions,
    mut said: Said,
    stop_leaving: bool,
) -> Result<Hop> {
    let endpoint: Option<Uri> = opts.endpoint.trim_end_matches('/').parse().ok();
    let at_endpoint = |uri: &Uri| endpoint.as_ref().is_some_and(|e| same_origin(uri, e));
    let mut hop = start.to_string();
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
        let here = at_endpoint(&uri);
        let mut request = agent.get(&hop).header("Accept-Encoding", "identity");
        if from > 0 {
            request = request.header("Range", format!("bytes={from}-"));
        }
        let token = opts.token.as_deref().filter(|_| here);
        if let Some(t) = token {
            request = request.header("Authorization", format!("Bearer {t}"));
        }
        let response = request.call().map_err(|e| connect_error(url, &hop, e))?;
        let h = response.headers();
        said.hear(h, here);
        let status = response.status().as_u16();
        if matches!(status, 301 | 302 | 303 | 307 | 308) {
            let next = header(h, "location").and_then(|l| join_location(&uri, l.trim()));
            let next = next.ok_or_else(|| {
                Error::Download(format!(
                    "{hop} redirected (HTTP {status}) without a usable Location"
                ))
            })?;
            let leaves = next.parse().map_or(true, |n: Uri| !at_endpoint(&n));
            if stop_leaving && here && leaves {
                return Ok(Hop::Leaving {
                    location: next,
                    said,
                });
            }
            hop = next;
            continue;
        }
        return Ok(Hop::Reply(Reply {
            response,
            url: hop,
            sent_token: token.is_some(),
            said,
        }));
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

/// One download of `url` through `request` (called with the byte to start from) into
/// `target.part` (resumed from its length when it exists), checked and renamed to `target.file`.
fn transfer(
    url: &str,
    request: &mut dyn FnMut(u64) -> Result<Reply>,
    target: &Target,
    want: Option<&str>,
    on: &mut dyn FnMut(Event),
) -> std::result::Result<(), Failure> {
    let part = target.part.as_path();
    let fail = |m: String| Failure::Other(Error::Download(m));
    let mut from = file_len(part)?;
    let mut tries = 0;
    let (reply, offset, total) = loop {
        tries += 1;
        let reply = request(from)?;
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
            // the partial file is as long as the file, or longer: start over
            416 if from > 0 && tries == 1 => {
                remove_if_there(part)?;
                from = 0;
            }
            _ => return Err(status_error(url, &reply, status).into()),
        }
    };
    let total = match (total, reply.said.size) {
        (Some(t), Some(s)) if t != s => {
            return Err(fail(format!(
                "{url}: the server announced {t} bytes but X-Linked-Size says {s}"
            )))
        }
        (t, s) => t.or(s),
    };
    let want = want.map(str::to_string).or(reply.said.sha256.clone());

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
    fs::rename(part, &target.file).map_err(|e| Error::io(&target.file, e))?;
    Ok(())
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
    fn blobs_are_named_by_plain_etags_only() {
        let sha = "ab".repeat(32);
        assert_eq!(blob_name(&format!("\"{sha}\"")), Some(sha.clone()));
        assert_eq!(blob_name(&format!("W/\"{sha}\"")), Some(sha.clone()));
        for bad in ["\"\"", "\"../../x\"", "a/b", "x.incomplete", "a b", ".."] {
            assert_eq!(blob_name(bad), None, "{bad}");
        }
        assert!(is_commit(&"0a".repeat(20)));
        assert!(!is_commit(&"0A".repeat(20)) && !is_commit("main") && !is_commit("0123abc"));
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
