//! Error bodies in the shapes the real service uses: the API envelope
//! `{"code","message","requestId"}`, OSS XML on the data host, Spring-style 404/405, gateway HTML.

use super::util::{self, request_id};
use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

pub type Resp = Response<Body>;

/// An API error: status + code + message (+ extra headers such as `x-retry-after`).
#[derive(Debug, Clone)]
pub struct ApiErr {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub headers: Vec<(&'static str, String)>,
}

impl ApiErr {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> ApiErr {
        ApiErr {
            status,
            code: code.to_string(),
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn not_found_file_id(id: &str) -> ApiErr {
        ApiErr::new(
            404,
            "NotFound.FileId",
            format!("The resource file_id cannot be found. file_id {id}"),
        )
    }

    pub fn in_bin(id: &str) -> ApiErr {
        ApiErr::new(
            400,
            "ForbiddenFileInTheRecycleBin",
            format!("This operation is forbidden for file in the recycle bin. file_id {id}"),
        )
    }

    pub fn drive_invalid(drive: &str) -> ApiErr {
        ApiErr::new(
            403,
            "ForbiddenDriveNotValid",
            format!("The drive is not valid. drive_id {drive}"),
        )
    }

    /// Missing or malformed required field `field` (snake_case) -> `InvalidParameter.FieldName`.
    pub fn param(field: &str) -> ApiErr {
        let camel: String = field
            .split('_')
            .map(|p| {
                let mut c = p.chars();
                match c.next() {
                    Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                    None => String::new(),
                }
            })
            .collect();
        ApiErr::new(
            400,
            &format!("InvalidParameter.{camel}"),
            format!("The input parameter {field} is not valid."),
        )
    }

    pub fn already_exists(id: &str) -> ApiErr {
        ApiErr::new(
            409,
            "AlreadyExist.File",
            format!("The resource file has already exists. drive has the same file, can't update, file_id {id}"),
        )
    }

    pub fn into_response(self) -> Resp {
        let body = json!({"code": self.code, "message": self.message, "requestId": request_id()});
        let mut r = json_response(self.status, &body);
        for (k, v) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                r.headers_mut().insert(k, v);
            }
        }
        r
    }
}

pub fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

pub fn json_response(code: u16, body: &Value) -> Resp {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status(code);
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    r.headers_mut().insert(
        "x-ca-request-id",
        HeaderValue::from_str(&request_id()).unwrap_or(HeaderValue::from_static("0")),
    );
    r
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// OSS XML error; `extra` adds elements such as `Expires`/`ServerTime`.
pub fn oss_error(
    code: u16,
    oss_code: &str,
    message: &str,
    ec: &str,
    extra: &[(&str, String)],
) -> Resp {
    let rid = util::rand_hex(24, true);
    let mut body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n  <Code>{}</Code>\n  <Message>{}</Message>\n  <RequestId>{rid}</RequestId>\n  <HostId>127.0.0.1-data.emulator</HostId>\n",
        xml_escape(oss_code),
        xml_escape(message)
    );
    for (k, v) in extra {
        body.push_str(&format!("  <{k}>{}</{k}>\n", xml_escape(v)));
    }
    body.push_str(&format!("  <EC>{ec}</EC>\n</Error>\n"));
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status(code);
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/xml"));
    if let Ok(v) = HeaderValue::from_str(&rid) {
        r.headers_mut().insert("x-oss-request-id", v);
    }
    r
}

/// 403 `AccessDenied` "Request has expired." with the Expires/ServerTime elements (section 6.3).
pub fn oss_expired(expires: u64) -> Resp {
    oss_error(
        403,
        "AccessDenied",
        "Request has expired.",
        "0002-00000069",
        &[
            ("Expires", util::fmt_secs(expires)),
            ("ServerTime", util::fmt_secs(util::now_secs())),
        ],
    )
}

pub fn oss_signature() -> Resp {
    oss_error(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
        "0002-00000040",
        &[],
    )
}

/// What Spring Boot answers for a path or method it does not map.
pub fn spring(code: u16, path: &str) -> Resp {
    let error = if code == 405 {
        "Method Not Allowed"
    } else {
        "Not Found"
    };
    json_response(
        code,
        &json!({"timestamp": util::fmt_ms(util::now_ms()), "status": code, "error": error, "path": path}),
    )
}

/// A gateway error page (the service sometimes answers HTML/XML instead of JSON).
pub fn gateway(code: u16, xml: bool) -> Resp {
    let (ctype, body) = if xml {
        (
            "application/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n  <Code>BadGateway</Code>\n  <Message>The gateway received an invalid response.</Message>\n  <RequestId>{}</RequestId>\n</Error>\n",
                util::rand_hex(24, true)
            ),
        )
    } else {
        (
            "text/html",
            format!(
                "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n<hr><center>Tengine</center>\r\n</body>\r\n</html>\r\n",
                reason = status(code).canonical_reason().unwrap_or("Error")
            ),
        )
    };
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status(code);
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static(ctype));
    r
}
