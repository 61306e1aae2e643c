//! The OpenClaw Control UI's shell, served without a token as the gateway serves it to
//! anyone: people open the link the gateway prints (`http://host:18789/#token=…`), whose
//! fragment never reaches a server; the page loads, and its script sends the token itself
//! (in the first WebSocket frame, and as a bearer header to the UI's config). Only the
//! static shell passes: GET/HEAD of the page and of its static files, on the normalized
//! path. Every WebSocket and every other request still needs a token.

use ::http::header::{ACCEPT, AUTHORIZATION, COOKIE};
use ::http::request::Parts;
use ::http::{HeaderMap, Method, Uri};

/// The page itself, and the static files at the UI's root.
const FILES: &[&str] = &[
    "/",
    "/index.html",
    "/favicon.svg",
    "/favicon-32.png",
    "/favicon.ico",
    "/apple-touch-icon.png",
    "/manifest.webmanifest",
    "/asset-manifest.json",
    "/social-card.png",
    "/sw.js",
];

/// Folders of static files (built assets, fonts, images).
const FOLDERS: &[&str] = &[
    "/assets/",
    "/fonts/",
    "/themes/",
    "/app-art/",
    "/community-art/",
    "/provider-icons/",
    "/cloud-provider-icons/",
    "/file-icons/",
];

/// What a request without a token may have of the UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shell {
    /// A file of the shell: forwarded as asked.
    File,
    /// A browser navigation to one of the UI's own routes: the upstream is asked for the
    /// page (`/`) instead, so nothing but the shell is fetched.
    Page,
}

/// The shell's paths, as configured.
#[derive(Debug, Clone)]
pub(crate) struct ControlUi {
    routes: Vec<String>,
}

impl ControlUi {
    pub(crate) fn new(routes: &[String]) -> ControlUi {
        ControlUi {
            routes: routes.to_vec(),
        }
    }

    /// `path` is the normalized path. A request that carries a credential of its own
    /// (a bearer header, the token cookie or query parameter) is not the shell's: it is
    /// judged like any other, so a wrong token is refused and `?token=` still sets the cookie.
    pub(crate) fn classify(&self, parts: &Parts, path: &str, carries: bool) -> Option<Shell> {
        if carries || !(parts.method == Method::GET || parts.method == Method::HEAD) {
            return None;
        }
        if FILES.contains(&path) || FOLDERS.iter().any(|f| crate::path::is_under(path, f)) {
            return Some(Shell::File);
        }
        let route = self.routes.iter().any(|r| crate::path::is_under(path, r));
        (route && is_navigation(&parts.headers)).then_some(Shell::Page)
    }
}

/// A browser loading a document: `Sec-Fetch-Mode: navigate`, or (older browsers) an
/// `Accept` that asks for HTML.
fn is_navigation(headers: &HeaderMap) -> bool {
    if let Some(mode) = headers.get("sec-fetch-mode") {
        return mode.as_bytes() == b"navigate";
    }
    headers
        .get(ACCEPT)
        .is_some_and(|a| a.to_str().is_ok_and(|a| a.contains("text/html")))
}

/// Whether the request presents anything that could be a credential.
pub(crate) fn carries_credential(parts: &Parts, cookie: &str, query_param: &str) -> bool {
    if parts.headers.contains_key(AUTHORIZATION) {
        return true;
    }
    let cookie_named = parts.headers.get_all(COOKIE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(';')
                .any(|c| c.trim().split('=').next() == Some(cookie))
        })
    });
    cookie_named || crate::auth::query_value(parts.uri.query().unwrap_or(""), query_param).is_some()
}

/// The page's URI: the root, without the route's path or query.
pub(crate) fn page_uri() -> Uri {
    Uri::from_static("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: Method, path: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = ::http::Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_shell_is_get_and_head_of_listed_paths_only() {
        let ui = ControlUi::new(&["/settings".into(), "/chat".into()]);
        let c = |m: Method, p: &str, h: &[(&str, &str)]| ui.classify(&parts(m, p, h), p, false);
        assert_eq!(c(Method::GET, "/", &[]), Some(Shell::File));
        assert_eq!(
            c(Method::HEAD, "/assets/index-x.js", &[]),
            Some(Shell::File)
        );
        assert_eq!(c(Method::POST, "/", &[]), None);
        assert_eq!(c(Method::GET, "/assetsx/a.js", &[]), None);
        assert_eq!(c(Method::GET, "/control-ui-config.json", &[]), None);
        assert_eq!(c(Method::GET, "/tools/invoke", &[]), None);
        assert_eq!(c(Method::GET, "/plugins/x/assets/a.js", &[]), None);
        let nav = [("sec-fetch-mode", "navigate")];
        assert_eq!(
            c(Method::GET, "/settings/model-setup", &nav),
            Some(Shell::Page)
        );
        assert_eq!(c(Method::GET, "/settings/model-setup", &[]), None);
        let fetch = [("sec-fetch-mode", "cors"), ("accept", "text/html")];
        assert_eq!(c(Method::GET, "/chat", &fetch), None);
        assert_eq!(
            c(Method::GET, "/chat", &[("accept", "text/html")]),
            Some(Shell::Page)
        );
        assert_eq!(c(Method::GET, "/api/chat", &nav), None);
        let with_token = ui.classify(&parts(Method::GET, "/", &[]), "/", true);
        assert_eq!(with_token, None);
    }
}
