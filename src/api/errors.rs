//! Turning error responses into `crate::error::Error`.
//!
//! The service answers errors in several shapes (reference 0): the JSON envelope
//! `{"code","message","requestId"}`, Spring's `{"status","error","path"}`, OSS XML
//! `<Error><Code>…</Code><Message>…</Message></Error>` on signed URLs, and HTML/plain text or
//! nothing at all from gateways. All become a (code, message) pair, then one typed error keyed
//! on the code (statuses for the same code differ between hosts and over time).

use crate::error::Error;

/// What an error body said, whatever its shape.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// Longest message kept from a non-JSON body (gateway pages can be large).
const MAX_MESSAGE: usize = 200;

pub fn parse_error_body(body: &[u8]) -> ErrorBody {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return ErrorBody::default();
    }
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) {
        let s = |k: &str| {
            map.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let mut code = s("code");
        if code.is_empty() {
            // Spring style: {"status":404,"error":"Not Found","path":...}
            code = s("error");
        }
        let mut message = s("message");
        if message.is_empty() {
            message = s("text"); // OpenList helper: {"text": "..."}
        }
        return ErrorBody { code, message };
    }
    if text.starts_with('<') {
        let code = xml_tag(text, "Code").unwrap_or_default();
        let message = xml_tag(text, "Message").unwrap_or_default();
        if !code.is_empty() || !message.is_empty() {
            return ErrorBody { code, message };
        }
    }
    ErrorBody {
        code: String::new(),
        message: shorten(text),
    }
}

fn shorten(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE)
        .collect();
    flat
}

/// Text of the first `<tag>…</tag>` (OSS error bodies are flat and need no real XML parser).
pub fn xml_tag(text: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find(&close)?;
    Some(text[start..start + len].trim().to_string())
}

/// Access-token trouble: refresh once and replay. `I400JD` is refreshed on by alist (meaning
/// unknown) and some hosts send these codes with 400 instead of 401.
pub fn is_token_error(status: u16, code: &str) -> bool {
    matches!(
        code,
        "AccessTokenExpired" | "AccessTokenInvalid" | "TokenExpired" | "I400JD"
    ) || (status == 401 && code.is_empty())
}

/// The typed error for an API (JSON endpoint) failure.
pub fn map_api_error(status: u16, body: ErrorBody) -> Error {
    let ErrorBody { code, message } = body;
    let msg = if message.is_empty() {
        code.clone()
    } else {
        message.clone()
    };
    match code.as_str() {
        "NotFound.UploadId" | "NoSuchUpload" => Error::NoSuchUpload(msg),
        c if c.starts_with("NotFound") => Error::NotFound(msg),
        "AlreadyExist.File" => Error::AlreadyExists(msg),
        "QuotaExhausted.Drive" => Error::QuotaExhausted(msg),
        "ForbiddenFileInTheRecycleBin" => Error::InRecycleBin(msg),
        "PreHashMatched" => Error::PreHashMatched,
        "PermissionDenied" | "UserNotAllowedAccessDrive" | "ForbiddenDriveNotValid" => {
            Error::PermissionDenied(format!("{code}: {msg}"))
        }
        "TooManyRequests" => Error::RateLimited { retry_after: None },
        c if is_token_error(status, c) => Error::Unauthorized(format!("{code}: {msg}")),
        _ => Error::Api {
            status,
            code,
            message,
        },
    }
}

/// The typed error for a signed-URL (OSS data host) failure.
pub fn map_data_error(status: u16, body: ErrorBody) -> Error {
    let expired = body.message.contains("Request has expired") || body.message.contains("expired");
    let concurrency =
        body.code.contains("ExceedMaxConcurrency") || body.message.contains("ExceedMaxConcurrency");
    match (status, body.code.as_str()) {
        (403, _) if concurrency => Error::ExceedMaxConcurrency,
        (403, "AccessDenied") | (403, "") if expired => Error::UrlExpired,
        (_, "PartAlreadyExist") | (409, "") => Error::PartAlreadyExist,
        (_, "PartNotSequential") => Error::PartNotSequential,
        (_, "NoSuchUpload") => Error::NoSuchUpload(body.message),
        _ => Error::Api {
            status,
            code: body.code,
            message: body.message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_error_shape() {
        let j = parse_error_body(
            br#"{"code":"NotFound.FileId","message":"not found","requestId":"X"}"#,
        );
        assert_eq!(j.code, "NotFound.FileId");
        assert_eq!(j.message, "not found");
        let spring =
            parse_error_body(br#"{"timestamp":1,"status":404,"error":"Not Found","path":"/x"}"#);
        assert_eq!(spring.code, "Not Found");
        let xml = parse_error_body(
            b"<?xml version=\"1.0\"?>\n<Error>\n  <Code>AccessDenied</Code>\n  <Message>Request has expired.</Message>\n</Error>",
        );
        assert_eq!(xml.code, "AccessDenied");
        assert_eq!(xml.message, "Request has expired.");
        let html = parse_error_body(b"<html><body>502 Bad Gateway</body></html>");
        assert_eq!(html.code, "");
        assert!(html.message.contains("502 Bad Gateway"));
        assert_eq!(parse_error_body(b""), ErrorBody::default());
        let long = vec![b'x'; 10_000];
        assert_eq!(parse_error_body(&long).message.len(), MAX_MESSAGE);
        let weird = parse_error_body(br#"{"code":5,"message":null}"#);
        assert_eq!(weird, ErrorBody::default());
        assert_eq!(parse_error_body(b"[1,2]").message, "[1,2]");
    }

    fn body(code: &str) -> ErrorBody {
        ErrorBody {
            code: code.into(),
            message: "m".into(),
        }
    }

    #[test]
    fn maps_codes_not_statuses() {
        assert!(matches!(
            map_api_error(404, body("NotFound.FileId")),
            Error::NotFound(_)
        ));
        assert!(matches!(
            map_api_error(400, body("NotFound.File")),
            Error::NotFound(_)
        ));
        assert!(matches!(
            map_api_error(400, body("NotFound.UploadId")),
            Error::NoSuchUpload(_)
        ));
        assert!(matches!(
            map_api_error(409, body("AlreadyExist.File")),
            Error::AlreadyExists(_)
        ));
        assert!(matches!(
            map_api_error(400, body("QuotaExhausted.Drive")),
            Error::QuotaExhausted(_)
        ));
        assert!(matches!(
            map_api_error(400, body("ForbiddenFileInTheRecycleBin")),
            Error::InRecycleBin(_)
        ));
        assert!(matches!(
            map_api_error(409, body("PreHashMatched")),
            Error::PreHashMatched
        ));
        assert!(matches!(
            map_api_error(400, body("PreHashMatched")),
            Error::PreHashMatched
        ));
        for c in [
            "PermissionDenied",
            "UserNotAllowedAccessDrive",
            "ForbiddenDriveNotValid",
        ] {
            assert!(matches!(
                map_api_error(403, body(c)),
                Error::PermissionDenied(_)
            ));
        }
        assert!(matches!(
            map_api_error(429, body("TooManyRequests")),
            Error::RateLimited { .. }
        ));
        assert!(matches!(
            map_api_error(401, body("AccessTokenExpired")),
            Error::Unauthorized(_)
        ));
        match map_api_error(502, ErrorBody::default()) {
            Error::Api { status: 502, .. } => {}
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn token_errors() {
        assert!(is_token_error(401, "AccessTokenExpired"));
        assert!(is_token_error(400, "AccessTokenInvalid"));
        assert!(is_token_error(400, "I400JD"));
        assert!(is_token_error(401, ""));
        assert!(!is_token_error(403, "PermissionDenied"));
        assert!(!is_token_error(400, "NotFound.File"));
    }

    #[test]
    fn maps_oss_errors() {
        let xml = |c: &str, m: &str| ErrorBody {
            code: c.into(),
            message: m.into(),
        };
        assert!(matches!(
            map_data_error(403, xml("AccessDenied", "Request has expired.")),
            Error::UrlExpired
        ));
        assert!(matches!(
            map_data_error(
                403,
                xml(
                    "RequestDeniedByCallback",
                    "Callback deny this request reason: ExceedMaxConcurrency"
                )
            ),
            Error::ExceedMaxConcurrency
        ));
        assert!(matches!(
            map_data_error(409, xml("PartAlreadyExist", "")),
            Error::PartAlreadyExist
        ));
        assert!(matches!(
            map_data_error(400, xml("PartNotSequential", "")),
            Error::PartNotSequential
        ));
        assert!(matches!(
            map_data_error(404, xml("NoSuchUpload", "")),
            Error::NoSuchUpload(_)
        ));
        assert!(matches!(
            map_data_error(403, xml("SignatureDoesNotMatch", "bad sig")),
            Error::Api { status: 403, .. }
        ));
    }
}
