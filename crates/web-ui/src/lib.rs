//! The operator's web page: plain HTML, CSS and JavaScript under `assets/`, embedded in the
//! binary with `include_str!` (no build step, no CDN, no external fonts, so an air-gapped site
//! renders it). Every site serves it at `/` (the page) and `/ui/...` (its assets); the page
//! reads the site's own `/v1` API and follows its event stream.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Where it is served.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

/// Every file the page needs, the page itself first.
pub const ASSETS: [Asset; 3] = [
    Asset { path: "/", content_type: "text/html; charset=utf-8", body: include_str!("../assets/index.html") },
    Asset {
        path: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/app.js"),
    },
    Asset {
        path: "/ui/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../assets/style.css"),
    },
];

fn serve(asset: Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
            // The assets change with the binary: revalidate rather than run a stale page.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        asset.body,
    )
        .into_response()
}

/// The routes of the page and its assets, for any router state.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        let asset = *asset;
        router.route(asset.path, get(move || async move { serve(asset) }))
    })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower_service::Service;

    use super::*;

    async fn get(path: &str) -> (StatusCode, String, String) {
        let mut app: Router = router();
        let response =
            app.call(Request::get(path).body(Body::empty()).expect("a request")).await.expect("infallible");
        let status = response.status();
        let kind =
            response.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().expect("ascii").to_owned());
        let body = response.into_body().collect().await.expect("a body").to_bytes();
        (status, kind.unwrap_or_default(), String::from_utf8(body.to_vec()).expect("utf-8"))
    }

    #[tokio::test]
    async fn the_page_and_its_assets_are_served_with_their_types() {
        let (status, kind, body) = get("/").await;
        assert_eq!((status, kind.as_str()), (StatusCode::OK, "text/html; charset=utf-8"));
        assert!(body.contains("/ui/app.js") && body.contains("/ui/style.css"), "{body}");
        let (status, kind, _) = get("/ui/app.js").await;
        assert_eq!((status, kind.as_str()), (StatusCode::OK, "text/javascript; charset=utf-8"));
        let (status, kind, _) = get("/ui/style.css").await;
        assert_eq!((status, kind.as_str()), (StatusCode::OK, "text/css; charset=utf-8"));
    }

    /// An air-gapped site must render the page: nothing may be fetched from elsewhere.
    #[test]
    fn no_asset_refers_to_another_origin() {
        for asset in ASSETS {
            // The SVG namespace is a name, not an address anything is fetched from.
            let body = asset.body.replace("http://www.w3.org/2000/svg", "");
            for needle in ["http://", "https://", "//cdn", "@import", "fonts.g"] {
                assert!(!body.contains(needle), "{} refers to `{needle}`", asset.path);
            }
        }
    }
}
