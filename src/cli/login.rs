//! `alipanfs login`: sign in by scanning a QR code with the Aliyundrive app, and keep the
//! refresh token in the token store (the one `mount` reads: `--token-file`, atomic, 0600).
//!
//! With `--client-id/--client-secret` (command line, environment or config file) the Open API's
//! own flow is used, else the online token service's (`--token-url`); see `api::login`.
//! Prints the QR code in Unicode half blocks and the URL it encodes, then one line per change
//! of state. Expiry, refusal, timeout and network errors end with one line and exit 1.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use qrcode::render::unicode::Dense1x2;
use qrcode::QrCode;

use super::options::{MountOptions, Settings};
use crate::api::login::{QrFlow, QrLogin, QrStatus};
use crate::api::{jwt_sub, TokenStore};
use crate::error::{Error, Result};

/// Each HTTP call of the sign-in may take this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, clap::Args)]
pub struct LoginArgs {
    /// TOML config file (for client_id/client_secret, token_file, token_url, api_url)
    /// [default: $XDG_CONFIG_HOME/alipanfs/config.toml].
    #[arg(long, env = "ALIPANFS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Give up if the code is not confirmed within this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300.0)]
    pub timeout: f64,
    /// Seconds between two looks at the code's status.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, hide = true)]
    pub qr_poll_interval: f64,
    #[command(flatten)]
    pub options: MountOptions,
}

/// Runs the command; returns the exit code.
pub fn main(args: &LoginArgs) -> i32 {
    let result = super::runtime().and_then(|rt| rt.block_on(login(args.clone())));
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("alipanfs: {e}");
            1
        }
    }
}

fn flow(s: &Settings) -> QrFlow {
    match (&s.client_id, &s.client_secret) {
        (Some(id), Some(secret)) => QrFlow::OpenApi {
            api_url: s.api_url.clone(),
            client_id: id.clone(),
            client_secret: secret.clone(),
        },
        _ => QrFlow::Service {
            api_url: s.api_url.clone(),
            token_url: s.token_url.clone(),
        },
    }
}

async fn login(args: LoginArgs) -> Result<()> {
    let settings = super::settings(args.options, &[], args.config)?;
    let deadline = Duration::try_from_secs_f64(args.timeout)
        .map_err(|_| Error::Config("--timeout must be a number of seconds ≥ 0".into()))?;
    let poll = Duration::try_from_secs_f64(args.qr_poll_interval)
        .unwrap_or(Duration::from_secs(1))
        .max(Duration::from_millis(100));
    let flow = flow(&settings);
    let service = match &flow {
        QrFlow::OpenApi { .. } => "your app (--client-id)".to_string(),
        QrFlow::Service { token_url, .. } => {
            format!(
                "the online token service at {}",
                crate::redact::url(token_url)
            )
        }
    };
    let qr = QrLogin::new(flow, CALL_TIMEOUT)?;
    let code = qr.start().await?;
    println!("Scan this QR code with the Aliyundrive (阿里云盘) app to sign in through {service}:");
    println!("{}", render(&code.url));
    println!(
        "or open this URL on a phone signed in to the app:\n  {}",
        code.url
    );
    println!("Waiting for the scan...");
    let _ = std::io::stdout().flush();
    let started = Instant::now();
    let mut scanned = false;
    let auth_code = loop {
        match qr.status(&code.sid).await? {
            QrStatus::WaitLogin => {}
            QrStatus::Scanned if !scanned => {
                scanned = true;
                println!("Scanned; confirm the sign-in in the app...");
                let _ = std::io::stdout().flush();
            }
            QrStatus::Scanned => {}
            QrStatus::Confirmed(code) => break code,
            QrStatus::Expired => return Err(Error::SignIn(
                "the QR code expired before the sign-in was confirmed; run `alipanfs login` again"
                    .into(),
            )),
            QrStatus::Ended(status) => {
                return Err(Error::SignIn(format!(
                    "the sign-in was not confirmed (status {status:?}); run `alipanfs login` again"
                )))
            }
        }
        if started.elapsed() >= deadline {
            return Err(Error::SignIn(format!(
                "no confirmed sign-in within {} s (--timeout); run `alipanfs login` again",
                deadline.as_secs()
            )));
        }
        tokio::time::sleep(poll).await;
    };
    let tokens = qr.exchange(&auth_code).await?;
    let access = tokens.access_token.unwrap_or_default();
    let refresh = tokens.refresh_token.unwrap_or_default();
    let who = qr.who(&access).await.unwrap_or_default();
    let user_id = Some(who.id.clone())
        .filter(|id| !id.is_empty())
        .or_else(|| jwt_sub(&access))
        .or_else(|| jwt_sub(&refresh));
    let now = crate::api::unix_now();
    TokenStore {
        refresh_token: Some(refresh),
        access_token: Some(access),
        access_expires_at: Some(now + tokens.expires_in.unwrap_or(7200)),
        user_id: user_id.clone(),
        updated_at: Some(now),
    }
    .save(&settings.token_file)?;
    let name = if who.name.is_empty() {
        "(name not given)".to_string()
    } else {
        who.name
    };
    println!(
        "Signed in as {name} (user id {}); refresh token saved to {}",
        user_id.as_deref().unwrap_or("unknown"),
        settings.token_file.display()
    );
    Ok(())
}

/// The QR code of `text` in Unicode half blocks, light modules drawn (so it reads on a dark
/// terminal as on paper), with the quiet zone.
fn render(text: &str) -> String {
    match QrCode::new(text.as_bytes()) {
        Ok(code) => code
            .render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
        Err(e) => format!("(cannot draw the QR code: {e}; use the URL below)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_is_drawn_in_half_blocks() {
        let art = render("https://www.alipan.com/o/oauth/authorize?sid=0123456789abcdef");
        let lines: Vec<&str> = art.lines().collect();
        assert!(lines.len() > 10);
        assert!(art.contains('█') || art.contains('▀') || art.contains('▄'));
        // Square: two module rows per text line.
        let width = lines[0].chars().count();
        assert!(
            (width / 2).abs_diff(lines.len()) <= 1,
            "{width} x {}",
            lines.len()
        );
    }
}
