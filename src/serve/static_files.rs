//! The web demo (`www/`), the npm package it imports (`pkg/`) and local models (`models/`), served
//! as static files so `flint serve` also hosts the in-browser chat at `/` (the page runs the model
//! on the visitor's GPU; it does not call this server's API).
//!
//! The files are looked for under `$FLINT_WEB_ROOT`, else under the current directory when it
//! holds `www/index.html` (a checkout with `scripts/build-web.sh` run); otherwise no route is added.
//! Like every route, they need the key when the server has `--api-key`.

use axum::Router;
use std::path::PathBuf;
use tower_http::services::{ServeDir, ServeFile};

/// The folder holding `www/`, `pkg/` and `models/`, if there is one.
pub fn web_root() -> Option<PathBuf> {
    match std::env::var_os("FLINT_WEB_ROOT") {
        Some(root) => Some(PathBuf::from(root)),
        None => std::path::Path::new("www/index.html")
            .is_file()
            .then(|| PathBuf::from(".")),
    }
}

/// Adds `/` (the demo page), `/www/`, `/pkg/` and `/models/` (with HTTP Range support, which the
/// web loader needs) to `app` when [`web_root`] finds the files.
pub fn add<S: Clone + Send + Sync + 'static>(app: Router<S>) -> Router<S> {
    let Some(root) = web_root() else {
        return app;
    };
    app.route_service("/", ServeFile::new(root.join("www/index.html")))
        .nest_service("/www", ServeDir::new(root.join("www")))
        .nest_service("/pkg", ServeDir::new(root.join("pkg")))
        .nest_service("/models", ServeDir::new(root.join("models")))
}
