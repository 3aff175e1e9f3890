//! A cookie-keeping HTTPS client that does not follow redirects: what a browser does on the
//! sign-in pages, step by step, for tests that look at each answer.

use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};

use super::TestServer;

pub const COOKIE: &str = "__Host-ward_session";

pub struct Web {
    pub client: reqwest::Client,
    pub base: String,
    /// The session cookie value the browser holds.
    pub cookie: Option<String>,
}

pub struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> Option<String> {
        self.headers.get(LOCATION).map(|v| v.to_str().unwrap().to_owned())
    }

    /// The CSRF token of the page's (first) form.
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("a form with a CSRF token") + marker.len();
        let end = self.body[start..].find('"').unwrap();
        self.body[start..start + end].to_owned()
    }

    pub fn csp(&self) -> String {
        self.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// The raw `Set-Cookie` header of the session, if any.
    pub fn set_cookie(&self) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|c| c.starts_with(COOKIE))
    }

    pub fn has_form(&self, action: &str) -> bool {
        self.body.contains(&format!("action=\"{action}\""))
    }
}

impl Web {
    pub fn new(s: &TestServer) -> Web {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(s.dir.join("tls/ca.pem")).unwrap()).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only([ca])
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Web {
            client,
            base: s.url.clone(),
            cookie: None,
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    async fn finish(&mut self, resp: reqwest::Response) -> Page {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap();
        let page = Page {
            status,
            headers,
            body,
        };
        if let Some(c) = page.set_cookie() {
            let value = c.split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
            self.cookie = (!value.is_empty()).then_some(value);
        }
        page
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let mut req = self.client.get(self.url(path));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", format!("{COOKIE}={c}"));
        }
        let resp = req.send().await.unwrap();
        self.finish(resp).await
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut req = self.client.post(self.url(path)).form(fields);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", format!("{COOKIE}={c}"));
        }
        let resp = req.send().await.unwrap();
        self.finish(resp).await
    }

    /// Posts the current page's form at `action` with its CSRF token and `fields`, then
    /// follows a redirect to Ward's own continue page (not to the application).
    pub async fn submit(&mut self, page: &Page, action: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = page.csrf();
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        let p = self.post(action, &all).await;
        match p.location() {
            Some(l) if l.starts_with('/') => self.get(&l).await,
            _ => p,
        }
    }
}
