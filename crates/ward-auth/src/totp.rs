//! TOTP (RFC 6238 over RFC 4226): HMAC-SHA-1, 6 digits, 30-second steps, one step of drift
//! either way; the `otpauth://` URI authenticator apps read, and its QR code as SVG drawn here
//! from a QR module matrix (`qrcodegen`), with no image library.

use hmac::{Hmac, KeyInit, Mac};
use qrcodegen::{QrCode, QrCodeEcc};
use sha1::Sha1;
use time::OffsetDateTime;
use ward_crypto::{SecretBytes, SecretString};

/// Seconds per time step.
pub const STEP_SECS: i64 = 30;
/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Steps of clock drift accepted either side of the current one.
pub const DRIFT_STEPS: i64 = 1;
/// Bytes of a new secret (160 bits, RFC 4226's recommendation).
pub const SECRET_BYTES: usize = 20;
/// Issuer shown by authenticator apps.
pub const ISSUER: &str = "Ward";

/// A fresh random secret.
pub fn generate_secret() -> SecretBytes {
    SecretBytes::new(ward_crypto::random_bytes(SECRET_BYTES))
}

/// The time step containing `now`.
pub fn step_at(now: OffsetDateTime) -> i64 {
    now.unix_timestamp().div_euclid(STEP_SECS)
}

/// The code of `secret` at time step `step` (RFC 4226 dynamic truncation), as a number.
fn code_at(secret: &[u8], step: i64) -> Option<u32> {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(secret).ok()?;
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let last = *digest.last()?;
    let offset = usize::from(last & 0x0f);
    let bytes: [u8; 4] = digest.get(offset..offset.checked_add(4)?)?.try_into().ok()?;
    let bin = u32::from_be_bytes(bytes) & 0x7fff_ffff;
    bin.checked_rem(10u32.checked_pow(DIGITS)?)
}

/// The code of `secret` at step `step`, zero-padded to six digits.
pub fn code(secret: &[u8], step: i64) -> Option<SecretString> {
    code_at(secret, step).map(|c| SecretString::new(format!("{c:06}")))
}

/// Whether `input` has the shape of a TOTP code (six ASCII digits, spaces ignored).
pub fn looks_like_code(input: &str) -> bool {
    let digits: Vec<char> = input.chars().filter(|c| !c.is_whitespace()).collect();
    digits.len() == 6 && digits.iter().all(char::is_ascii_digit)
}

/// The step among `now`'s and its neighbours whose code is `input`, if any. Every candidate
/// is computed and compared in constant time, so the answer's timing does not tell which.
/// Whether the step was used before is the caller's business (the store's last step).
pub fn matching_step(secret: &[u8], input: &str, now: OffsetDateTime) -> Option<i64> {
    if !looks_like_code(input) {
        return None;
    }
    let given: String = input.chars().filter(|c| !c.is_whitespace()).collect();
    let current = step_at(now);
    let mut found = None;
    for delta in -DRIFT_STEPS..=DRIFT_STEPS {
        let step = current.checked_add(delta)?;
        let Some(expected) = code(secret, step) else {
            continue;
        };
        if ward_crypto::ct_eq(expected.expose().as_bytes(), given.as_bytes()) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// Base32 (RFC 4648, no padding) of a secret, as authenticator apps take it by hand.
pub fn secret_base32(secret: &[u8]) -> SecretString {
    SecretString::new(data_encoding::BASE32_NOPAD.encode(secret))
}

/// The `otpauth://totp/` URI of `secret` for `username` (usernames are `[a-z0-9._-]`, so they
/// need no escaping).
pub fn otpauth_uri(secret: &[u8], username: &str) -> SecretString {
    let b32 = secret_base32(secret);
    SecretString::new(format!(
        "otpauth://totp/{ISSUER}:{username}?secret={}&issuer={ISSUER}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        b32.expose()
    ))
}

/// An SVG image of the QR code of `text` (medium error correction, 4-module quiet zone):
/// one path of unit squares, black on white, no script, scaled by the viewer.
pub fn qr_svg(text: &str) -> Option<String> {
    let qr = QrCode::encode_text(text, QrCodeEcc::Medium).ok()?;
    const BORDER: i32 = 4;
    let size = qr.size();
    let full = size.checked_add(BORDER.checked_mul(2)?)?;
    let mut path = String::new();
    for y in 0..size {
        for x in 0..size {
            if qr.get_module(x, y) {
                use std::fmt::Write;
                let _ = write!(
                    path,
                    "M{},{}h1v1h-1z",
                    x.checked_add(BORDER)?,
                    y.checked_add(BORDER)?
                );
            }
        }
    }
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" viewBox=\"0 0 {full} {full}\" \
         width=\"{px}\" height=\"{px}\" shape-rendering=\"crispEdges\" role=\"img\" \
         aria-label=\"QR code for the authenticator app\">\
         <rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\
         <path d=\"{path}\" fill=\"#000000\"/></svg>",
        px = full.checked_mul(6)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows (8 digits there; the last six here).
    #[test]
    fn rfc6238_vectors() {
        let secret = b"12345678901234567890";
        let cases: &[(i64, &str)] = &[
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
            (20_000_000_000, "353130"),
        ];
        for (t, want) in cases {
            let now = OffsetDateTime::from_unix_timestamp(*t).unwrap();
            assert_eq!(code(secret, step_at(now)).unwrap().expose(), *want, "t={t}");
        }
    }

    #[test]
    fn one_step_of_drift_either_way_and_no_more() {
        let secret = generate_secret();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_015).unwrap();
        let s = step_at(now);
        for (delta, accepted) in [(-2, false), (-1, true), (0, true), (1, true), (2, false)] {
            let c = code(secret.expose(), s + delta).unwrap();
            let got = matching_step(secret.expose(), c.expose(), now);
            assert_eq!(got.is_some(), accepted, "delta {delta}");
            if accepted {
                assert_eq!(got, Some(s + delta));
            }
        }
        assert_eq!(matching_step(secret.expose(), "12345", now), None);
        assert_eq!(matching_step(secret.expose(), "abcdef", now), None);
        let c = code(secret.expose(), s).unwrap();
        let spaced = format!("{} {}", &c.expose()[..3], &c.expose()[3..]);
        assert_eq!(matching_step(secret.expose(), &spaced, now), Some(s));
    }

    #[test]
    fn uri_and_qr() {
        let secret = b"12345678901234567890";
        let uri = otpauth_uri(secret, "alice");
        assert_eq!(
            uri.expose(),
            "otpauth://totp/Ward:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Ward&algorithm=SHA1&digits=6&period=30"
        );
        let svg = qr_svg(uri.expose()).unwrap();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.ends_with("</svg>"));
        assert!(!svg.contains("<script"));
        // The matrix is drawn: as many squares as dark modules.
        let qr = QrCode::encode_text(uri.expose(), QrCodeEcc::Medium).unwrap();
        let dark = (0..qr.size())
            .flat_map(|y| (0..qr.size()).map(move |x| (x, y)))
            .filter(|&(x, y)| qr.get_module(x, y))
            .count();
        assert_eq!(svg.matches("h1v1h-1z").count(), dark);
    }
}
