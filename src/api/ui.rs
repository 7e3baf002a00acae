//! `api::ui`: the operators' console, served at `/ui/` from files built
//! into the binary (`console/` in the repository: plain HTML, CSS and
//! JavaScript, no build step, nothing fetched from elsewhere at run time).
//!
//! The page reads the same HTTP API as the CLI with the token the user
//! gives it; serving it needs no token (it holds no data). `/` and `/ui`
//! redirect to `/ui/` with a 301, as Consul's `/` does.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::error;

/// One file of the console: its name under `/ui/`, type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../console/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/app.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../console/style.css"),
    },
];

/// What the page may do: its own scripts and styles only; it reads the
/// API of this node and of the other members (their own addresses).
const CSP: &str = "default-src 'self'; connect-src *; img-src 'self' data:; \
                   style-src 'self'; script-src 'self'; frame-ancestors 'none'";

fn serve(name: &str) -> Response {
    let Some(a) = ASSETS.iter().find(|a| a.name == name) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no such file in the console: /ui/{name}"),
        )
        .into_response();
    };
    let mut r = a.body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    // Small files that change with the binary: revalidate each time.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

/// `GET /ui/`: the page.
pub(super) async fn index() -> Response {
    serve("index.html")
}

/// `GET /ui/<file>`: one of its files.
pub(super) async fn file(Path(name): Path<String>) -> Response {
    serve(&name)
}

/// `GET /` and `GET /ui`: to the console, with Consul's 301
/// (`agent/http.go`, `Index`).
pub(super) async fn to_console() -> Response {
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, HeaderValue::from_static("/ui/"))],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_names_is_served() {
        let page = ASSETS[0].body;
        for a in &ASSETS[1..] {
            assert!(
                page.contains(&format!("/ui/{}", a.name)),
                "index.html does not load {}",
                a.name
            );
        }
        // Every event type /v1/events sends is one the page listens for.
        let app = ASSETS[1].body;
        for t in <crate::api::wire::EventType as strum::VariantNames>::VARIANTS {
            assert!(
                app.contains(&format!("\"{t}\"")),
                "app.js does not listen for {t}"
            );
        }
        // Nothing from elsewhere: no absolute URLs to load at run time.
        for a in ASSETS {
            for bad in ["src=\"http", "href=\"http", "url(http", "import("] {
                assert!(!a.body.contains(bad), "{} loads {bad}", a.name);
            }
        }
    }
}
