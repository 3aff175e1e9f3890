//! The sign-in pages (SPEC UI-1): server-rendered HTML that works without JavaScript, with
//! labelled fields, a CSRF token in every form, every interpolated value HTML-escaped, and a
//! Content-Security-Policy of their own (the API's forbids forms).

use std::sync::LazyLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;

/// The pages' only style, inline and allowed by its hash: no extra request, no `unsafe-inline`.
const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;color:#111}\
label{display:block;font-weight:600;margin-top:1rem}\
input[type=text],input[type=password]{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}\
button{margin-top:1.25rem;padding:.5rem 1.25rem;font-size:1rem}\
.error{color:#a00;font-weight:600}.codes{font-family:monospace;font-size:1.1rem}\
.secret{font-family:monospace;word-break:break-all}img.qr{width:14rem;height:14rem}";

static STYLE_HASH: LazyLock<String> =
    LazyLock::new(|| base64::engine::general_purpose::STANDARD.encode(ward_crypto::sha256(STYLE.as_bytes())));

/// The policy of a page: nothing but its hashed style and (for the QR code) a `data:` image;
/// forms go to Ward, or to the origin of the application's registered redirect URI (a form
/// post that ends the flow is redirected there, and browsers apply `form-action` to it).
pub fn policy(redirect_origin: Option<&str>) -> String {
    let extra = redirect_origin.map(|o| format!(" {o}")).unwrap_or_default();
    format!(
        "default-src 'none'; style-src 'sha256-{}'; img-src data:; form-action 'self'{extra}; \
         frame-ancestors 'none'; base-uri 'none'",
        *STYLE_HASH
    )
}

/// Marks a response as a page: `security_headers` sets this policy instead of the API's.
#[derive(Clone, Debug)]
pub struct PageCsp(pub HeaderValue);

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page, answered with `status`; `redirect_origin` as for [`policy`].
pub fn render(status: StatusCode, title: &str, body: &str, redirect_origin: Option<&str>) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · Ward</title><style>{STYLE}</style></head>\n\
         <body><main><h1>{t}</h1>\n{body}\n</main></body></html>\n",
        t = esc(title)
    );
    let mut resp = (status, html).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&policy(redirect_origin)) {
        resp.extensions_mut().insert(PageCsp(v));
    }
    resp
}

/// A form posting to `action` with the CSRF token and `fields` (already HTML).
pub fn form(action: &str, csrf: &str, fields: &str, submit: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{}\">\n<input type=\"hidden\" name=\"csrf\" value=\"{}\">\n{fields}\n\
         <button type=\"submit\">{}</button>\n</form>",
        esc(action),
        esc(csrf),
        esc(submit)
    )
}

/// A labelled input.
pub fn field(id: &str, label: &str, kind: &str, autocomplete: &str, extra: &str) -> String {
    format!(
        "<label for=\"{id}\">{}</label>\n<input id=\"{id}\" name=\"{id}\" type=\"{kind}\" \
         autocomplete=\"{autocomplete}\" required{extra}>",
        esc(label)
    )
}

/// An error paragraph announced by screen readers.
pub fn alert(message: Option<&str>) -> String {
    message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>\n", esc(m)))
        .unwrap_or_default()
}

/// A scope in plain words, for the consent page.
pub fn describe_scope(scope: &str) -> String {
    match scope {
        "openid" => return "Confirm to the application who you are".into(),
        "fhirUser" => return "Know which practitioner or patient record is yours".into(),
        "profile" => return "See your name and profile".into(),
        "launch" => return "Receive the context (patient, encounter) it was launched with".into(),
        "launch/patient" => return "Know which patient you choose to work with".into(),
        "launch/encounter" => return "Know which encounter you are working in".into(),
        "offline_access" => {
            return "Keep access after you sign out, until you or an administrator revoke it".into();
        }
        "online_access" => return "Keep access while you stay signed in".into(),
        _ => {}
    }
    let Some((context, rest)) = scope.split_once('/') else {
        return format!("Permission “{scope}”");
    };
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let Some((rtype, perms)) = rest.rsplit_once('.') else {
        return format!("Permission “{scope}”");
    };
    let verbs: Vec<&str> = match perms {
        "read" => vec!["read", "search"],
        "write" => vec!["create", "change", "delete"],
        "*" => vec!["read", "search", "create", "change", "delete"],
        letters => letters
            .chars()
            .filter_map(|c| match c {
                'c' => Some("create"),
                'r' => Some("read"),
                'u' => Some("change"),
                'd' => Some("delete"),
                's' => Some("search"),
                _ => None,
            })
            .collect(),
    };
    let what = if rtype == "*" {
        "all kinds of".to_owned()
    } else {
        rtype.to_owned()
    };
    let whose = match context {
        "patient" => "of the selected patient",
        "user" => "that you may access",
        "system" => "of every patient (system access)",
        _ => "",
    };
    let only = if query.is_empty() {
        String::new()
    } else {
        format!(" (only {})", query.replace('&', ", "))
    };
    let verbs = match verbs.split_last() {
        None => String::from("use"),
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    };
    let mut text = format!("{verbs} {what} records {whose}{only}");
    if let Some(first) = text.get(0..1) {
        text = format!("{}{}", first.to_uppercase(), text.get(1..).unwrap_or(""));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn scopes_in_plain_words() {
        assert_eq!(
            describe_scope("patient/Observation.rs"),
            "Read and search Observation records of the selected patient"
        );
        assert_eq!(
            describe_scope("user/*.read"),
            "Read and search all kinds of records that you may access"
        );
        assert_eq!(
            describe_scope("patient/Observation.rs?category=laboratory"),
            "Read and search Observation records of the selected patient (only category=laboratory)"
        );
        assert_eq!(describe_scope("openid"), "Confirm to the application who you are");
    }

    #[test]
    fn page_policy_allows_forms_to_self_and_no_script() {
        let p = policy(Some("https://app.example"));
        assert!(p.contains("form-action 'self' https://app.example;"));
        assert!(!p.contains("script"));
        assert!(p.starts_with("default-src 'none'"));
    }
}
