//! The web demo (`www/`), the npm package it imports (`pkg/`) and models, served as static files
//! so `flint serve` also hosts the in-browser chat at `/` (the page runs the model on the
//! visitor's GPU; it does not call this server's API).
//!
//! The page and package are looked for under `$FLINT_WEB_ROOT`, else under the current directory
//! when it holds `www/index.html`, else in the checkout this binary was built from (when it still
//! holds `www/index.html`: `cargo install --path .` and `cargo run` from anywhere); otherwise no
//! such route is added. `/models/` serves that root's `models/` folder.
//!
//! Whatever the folder, the chat model the server runs (a GGUF file) is offered at `/model.gguf`
//! (HTTP Range requests, which the web loader needs) and described at `/served-model.json`
//! (`{"name", "id", "url", "bytes"}`); the page defaults to it. Its `url` carries the file's size
//! and modification time as a query, so a browser's cache of one model is never taken for another
//! served at the same path. Like every route, these need the key when the server has `--api-key`.

use super::ServeConfig;
use axum::Router;
use serde_json::json;
use std::path::{Path, PathBuf};
use tower_http::services::{ServeDir, ServeFile};

/// The folder holding `www/`, `pkg/` and `models/`, if there is one.
pub fn web_root() -> Option<PathBuf> {
    if let Some(root) = std::env::var_os("FLINT_WEB_ROOT") {
        return Some(PathBuf::from(root));
    }
    let has_page = |dir: &Path| dir.join("www/index.html").is_file();
    if has_page(Path::new(".")) {
        return Some(PathBuf::from("."));
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR"));
    has_page(built_from).then(|| built_from.to_path_buf())
}

/// What `/served-model.json` says of `file`, served as `id`; `None` if it cannot be read.
pub fn served_model(file: &Path, id: &str) -> Option<serde_json::Value> {
    let meta = std::fs::metadata(file).ok()?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let name = file.file_name()?.to_string_lossy().into_owned();
    Some(json!({
        "name": name,
        "id": id,
        "url": format!("/model.gguf?v={}-{modified}", meta.len()),
        "bytes": meta.len(),
    }))
}

/// Adds `/` (the demo page), `/www/`, `/pkg/` and `/models/` (with HTTP Range support) when
/// [`web_root`] finds the files, and `/model.gguf` with `/served-model.json` when the server runs
/// a GGUF chat model ([`ServeConfig::model_file`]).
pub fn add<S: Clone + Send + Sync + 'static>(
    mut app: Router<S>,
    config: &ServeConfig,
) -> Router<S> {
    if let Some(file) = &config.model_file {
        if let Some(info) = served_model(file, &config.model_id) {
            app = app
                .route_service("/model.gguf", ServeFile::new(file))
                .route(
                    "/served-model.json",
                    axum::routing::get(move || async move { axum::Json(info) }),
                );
        }
    }
    let Some(root) = web_root() else {
        return app;
    };
    app.route_service("/", ServeFile::new(root.join("www/index.html")))
        .nest_service("/www", ServeDir::new(root.join("www")))
        .nest_service("/pkg", ServeDir::new(root.join("pkg")))
        .nest_service("/models", ServeDir::new(root.join("models")))
}
