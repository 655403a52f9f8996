//! The technician's status page: static assets embedded in the binary, served without auth
//! (they hold no data; the page fetches `/v1/health` and `/v1/events` with the token).
//!
//! Scripts and styles are served under names carrying a hash of their content, so a browser may
//! keep them forever and still never run a stale script against a newer agent; only the small
//! HTML document is revalidated on every load.

use super::ApiState;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use std::sync::{Arc, LazyLock};

/// Where the page lives; `/` redirects here so a technician can type just the address.
pub const PAGE_PATH: &str = "/status/";

/// No inline script or style anywhere, so nothing injected through a product or customer name
/// could run even if a rendering bug slipped past `textContent`. `connect-src 'self'` keeps a
/// token from being sent anywhere but this agent; `form-action 'none'` stops the token form from
/// ever submitting the token in a URL if the script failed to load.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'none'; \
     object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

struct Asset {
    /// The name `index.html` refers to.
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: [Asset; 3] = [
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("status/app.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("status/style.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("status/favicon.svg"),
    },
];

const INDEX_TEMPLATE: &str = include_str!("status/index.html");

struct Site {
    index: String,
    /// `(hashed name, asset)`, e.g. `app.3f2a9c01d4e5.js`.
    hashed: Vec<(String, &'static Asset)>,
}

fn hashed_name(asset: &Asset) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, asset.body);
    let short: String = digest.as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    match asset.name.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{short}.{ext}"),
        None => format!("{}.{short}", asset.name),
    }
}

static SITE: LazyLock<Site> = LazyLock::new(|| {
    let mut index = INDEX_TEMPLATE.to_owned();
    let mut hashed = Vec::with_capacity(ASSETS.len());
    for asset in &ASSETS {
        let name = hashed_name(asset);
        // The template quotes every asset reference, so a quoted match is exactly a reference.
        index = index.replace(&format!("\"{}\"", asset.name), &format!("\"{name}\""));
        hashed.push((name, asset));
    }
    Site { index, hashed }
});

/// Routes of the status page (`/` and its assets).
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/", get(|| async { Redirect::to(PAGE_PATH) }))
        .route("/status", get(|| async { Redirect::to(PAGE_PATH) }))
        .route("/status/", get(|| async { page() }))
        .route(
            "/status/{file}",
            get(|Path(file): Path<String>| async move { serve_asset(&file) }),
        )
}

fn with_headers(
    status: StatusCode,
    content_type: &'static str,
    cache: &'static str,
    body: axum::body::Body,
) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// The HTML document: small, and revalidated every time so a new agent's assets are picked up.
fn page() -> Response {
    with_headers(
        StatusCode::OK,
        "text/html; charset=utf-8",
        "no-cache",
        SITE.index.clone().into(),
    )
}

/// An asset by its hashed name (cached for good) or its plain name (for hand debugging, always
/// revalidated).
fn serve_asset(file: &str) -> Response {
    let site = &*SITE;
    if let Some((_, asset)) = site.hashed.iter().find(|(name, _)| name == file) {
        return with_headers(
            StatusCode::OK,
            asset.content_type,
            "public, max-age=31536000, immutable",
            asset.body.into(),
        );
    }
    if let Some(asset) = ASSETS.iter().find(|a| a.name == file) {
        return with_headers(
            StatusCode::OK,
            asset.content_type,
            "no-cache",
            asset.body.into(),
        );
    }
    if file == "index.html" {
        return page();
    }
    with_headers(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "no-store",
        "no such file on the status page\n".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(response: &Response, name: header::HeaderName) -> &str {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[test]
    fn every_asset_the_page_references_is_served_under_its_hash_with_its_content_type() {
        let site = &*SITE;
        for asset in &ASSETS {
            let hashed = hashed_name(asset);
            assert!(
                site.index.contains(&format!("\"{hashed}\"")),
                "index.html must reference {} as {hashed}",
                asset.name
            );
            let response = serve_asset(&hashed);
            assert_eq!(response.status(), StatusCode::OK, "{hashed}");
            assert_eq!(header(&response, header::CONTENT_TYPE), asset.content_type);
            assert!(header(&response, header::CACHE_CONTROL).contains("immutable"));
            assert_eq!(header(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            // The plain name still works, but must not be cached as if it never changed.
            let plain = serve_asset(asset.name);
            assert_eq!(plain.status(), StatusCode::OK);
            assert_eq!(header(&plain, header::CACHE_CONTROL), "no-cache");
        }
        assert_eq!(serve_asset("../Cargo.toml").status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_and_carries_the_policy_that_forbids_them() {
        let response = page();
        assert_eq!(
            header(&response, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        let csp = header(&response, header::CONTENT_SECURITY_POLICY);
        assert!(csp.starts_with("default-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        let html = &SITE.index;
        assert!(!html.contains("<script>"), "inline script in index.html");
        assert!(!html.contains("<style"), "inline style in index.html");
        assert!(
            !html.contains(" style="),
            "inline style attribute in index.html"
        );
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}
