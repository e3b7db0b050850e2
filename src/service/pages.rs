//! The ward pages of the `[http]` listener: `/` (every patient in care,
//! most urgent first) and `/patients/{id}` (Cp and Ce over the stay, the
//! target band, dose markers, the alert timeline, the model), with their
//! static assets (`assets/web/`: HTML, CSS and vanilla JS, embedded in the
//! binary; no front-end toolchain). The pages read the JSON API
//! ([`super::api`]) and follow the live stream ([`super::live`]).
//!
//! It owns which asset answers which path, with its content type, and the
//! page template's two substitutions: the ward's time zone (`[http]
//! time_zone`, validated as an IANA name at load; the browser formats the
//! times in it) and whether and how an operator may acknowledge from the
//! page (`[http.acknowledge]`).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

const WARD_HTML: &str = include_str!("../../assets/web/ward.html");
const PATIENT_HTML: &str = include_str!("../../assets/web/patient.html");

/// The embedded assets: (name, content type, body).
const ASSETS: [(&str, &str, &str); 4] = [
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/web/style.css"),
    ),
    (
        "common.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/web/common.js"),
    ),
    (
        "ward.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/web/ward.js"),
    ),
    (
        "patient.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/web/patient.js"),
    ),
];

/// Which page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Page {
    Ward,
    Patient,
}

/// A page with the time zone and the acknowledge mode (`off`,
/// `proxy_header` or `token`) filled in. `time_zone` was validated at load
/// (letters, digits, `/_-+`), so it needs no escaping in an attribute.
pub(crate) fn page(which: Page, time_zone: &str, acknowledge: &'static str) -> Response {
    let template = match which {
        Page::Ward => WARD_HTML,
        Page::Patient => PATIENT_HTML,
    };
    let body = template
        .replace("{{TIME_ZONE}}", time_zone)
        .replace("{{ACKNOWLEDGE}}", acknowledge);
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `/assets/{name}`: an embedded asset, or 404.
pub(crate) fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_a_page_names_is_embedded() {
        for html in [WARD_HTML, PATIENT_HTML] {
            for part in html.split("/assets/").skip(1) {
                let name = part.split('"').next().unwrap_or_default();
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == name),
                    "{name} is not embedded"
                );
            }
            assert!(html.contains("{{TIME_ZONE}}"));
            assert!(html.contains("{{ACKNOWLEDGE}}"));
        }
        assert_eq!(asset("nope.js").status(), StatusCode::NOT_FOUND);
        assert_eq!(asset("ward.js").status(), StatusCode::OK);
    }
}
