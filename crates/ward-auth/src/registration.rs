//! Checks of what a client registers (SPEC AC-2): redirect URIs and JWK Set URLs.

/// A redirect URI a client may register (RFC 6749 §3.1.2, RFC 8252 §7.3, §8.3): absolute,
/// `https`, or `http` only to a loopback host (a native app's local listener), no fragment, no
/// credentials.
pub fn check_redirect_uri(uri: &str) -> Result<(), &'static str> {
    if uri.len() > 2000 || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a redirect URI must be at most 2000 characters without spaces");
    }
    if uri.contains('#') {
        return Err("a redirect URI must not have a fragment");
    }
    let parsed = url::Url::parse(uri).map_err(|_| "a redirect URI must be an absolute URL")?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("a redirect URI must not carry credentials");
    }
    match parsed.scheme() {
        "https" if parsed.host().is_some() => Ok(()),
        "http" if is_loopback(&parsed) => Ok(()),
        "http" => Err("http redirect URIs are allowed only for loopback hosts (127.0.0.1, [::1], localhost)"),
        _ => Err("a redirect URI must use https (or http to a loopback host)"),
    }
}

fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A JWK Set URL: absolute `https` with a host, no fragment or credentials.
pub fn check_jwks_url(uri: &str) -> Result<(), &'static str> {
    let parsed = url::Url::parse(uri).map_err(|_| "--jwks-url must be an absolute URL")?;
    if parsed.scheme() != "https" || parsed.host().is_none() {
        return Err("--jwks-url must be an https URL");
    }
    if parsed.fragment().is_some() || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("--jwks-url must not have a fragment or credentials");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris() {
        for ok in [
            "https://app.example/cb",
            "https://app.example:8443/cb?x=1",
            "http://127.0.0.1:5000/cb",
            "http://[::1]/cb",
            "http://localhost:3000/cb",
        ] {
            assert_eq!(check_redirect_uri(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://app.example/cb",
            "https://app.example/cb#frag",
            "/relative/cb",
            "app.example/cb",
            "javascript:alert(1)",
            "https://user:pw@app.example/cb",
            "https://app.example/c b",
            "ftp://app.example/cb",
            "http://127.0.0.1.evil.example/cb",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn jwks_urls() {
        assert!(check_jwks_url("https://app.example/jwks.json").is_ok());
        assert!(check_jwks_url("http://app.example/jwks.json").is_err());
        assert!(check_jwks_url("file:///etc/passwd").is_err());
    }
}
