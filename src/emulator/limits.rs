//! Rate limits (token buckets per (user, app, class)) and fault injection rolls.

use super::errors::ApiErr;
use super::state::{Bucket, State};
use rand::Rng;
use std::time::Instant;

/// The three limit classes of section 6.1.
pub fn class_of(endpoint: &str) -> u8 {
    match endpoint {
        "openFile/list" => 0,
        "openFile/getDownloadUrl" => 1,
        _ => 2,
    }
}

/// The real 429 body text: "requests too fast, wait x-retry-after milliseconds".
pub const TOO_MANY: &str = "请求过快，请等待 x-retry-after 毫秒后再请求";

pub fn too_many(retry_after_ms: u64) -> ApiErr {
    let mut e = ApiErr::new(429, "TooManyRequests", TOO_MANY);
    e.headers
        .push(("x-retry-after", retry_after_ms.to_string()));
    e
}

impl State {
    /// Takes one token for this call or answers 429 with the wait in ms.
    ///
    /// Bucket capacity is one second's worth (at least 1), refilled continuously: a client that
    /// spaces calls at the documented rate never sees a 429, a burst above it does.
    pub fn take_token(&mut self, user: &str, app: &str, endpoint: &str) -> Result<(), ApiErr> {
        if self.force_429 > 0 {
            self.force_429 -= 1;
            return Err(too_many(1000));
        }
        let class = class_of(endpoint);
        let rate = match class {
            0 => self.knobs.rate_list,
            1 => self.knobs.rate_download_url,
            _ => self.knobs.rate_other,
        };
        if rate <= 0.0 {
            return Ok(());
        }
        let cap = rate.ceil().max(1.0);
        let now = Instant::now();
        let b = self
            .buckets
            .entry((user.to_string(), app.to_string(), class))
            .or_insert(Bucket {
                tokens: cap,
                last: now,
            });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(cap);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - b.tokens) / rate * 1000.0).ceil() as u64;
            Err(too_many(wait.max(1)))
        }
    }
}

/// What fault, if any, this request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// 500 with a JSON envelope (API) or OSS XML (data).
    Json500,
    /// 500 with an HTML page.
    Html500,
    /// Connection dropped (API: no body; data: body cut short).
    Drop,
    /// 502 with a gateway HTML or XML body.
    Gateway {
        xml: bool,
    },
}

pub fn roll(failure_rate: f64, xml_error_rate: f64) -> Fault {
    let mut rng = rand::thread_rng();
    if xml_error_rate > 0.0 && rng.gen::<f64>() < xml_error_rate {
        return Fault::Gateway { xml: rng.gen() };
    }
    if failure_rate > 0.0 && rng.gen::<f64>() < failure_rate {
        return match rng.gen_range(0..4) {
            0 => Fault::Json500,
            1 => Fault::Html500,
            _ => Fault::Drop,
        };
    }
    Fault::None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolls_respect_rates() {
        assert_eq!(roll(0.0, 0.0), Fault::None);
        assert_ne!(roll(1.0, 0.0), Fault::None);
        assert!(matches!(roll(0.0, 1.0), Fault::Gateway { .. }));
    }
}
