//! Narrative XHTML checks (R4 `txt-1`, `txt-2`): clinician apps render `Narrative.div`, so
//! anything beyond the FHIR subset of XHTML is stored cross-site scripting.
//!
//! A small well-formedness parser (elements, attributes, text, character and entity references,
//! comments) checks that the fragment is one `<div>` in the XHTML namespace, uses only the
//! elements and attributes the R4 reference validator allows (HTML 4.0 chapters 7-11 and 15,
//! `a`, `img`, `style`), carries no `javascript:`-like URL and has some non-whitespace content.
//! No DOCTYPE, processing instruction or CDATA section is accepted. Messages never quote input.

const XHTML_NS: &str = "http://www.w3.org/1999/xhtml";

/// Elements allowed in a narrative (the R4 reference validator's list).
const ELEMENTS: &[&str] = &[
    "p",
    "br",
    "div",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "a",
    "span",
    "b",
    "em",
    "i",
    "strong",
    "small",
    "big",
    "tt",
    "dfn",
    "q",
    "var",
    "abbr",
    "acronym",
    "cite",
    "blockquote",
    "hr",
    "address",
    "bdo",
    "kbd",
    "sub",
    "sup",
    "ul",
    "ol",
    "li",
    "dl",
    "dt",
    "dd",
    "pre",
    "table",
    "caption",
    "colgroup",
    "col",
    "thead",
    "tr",
    "tfoot",
    "tbody",
    "th",
    "td",
    "code",
    "samp",
    "img",
    "map",
    "area",
];

/// Attributes allowed on any element.
const ATTRIBUTES: &[&str] = &[
    "title",
    "style",
    "class",
    "id",
    "lang",
    "xml:lang",
    "dir",
    "accesskey",
    "tabindex",
    "span",
    "width",
    "align",
    "valign",
    "char",
    "charoff",
    "abbr",
    "axis",
    "headers",
    "scope",
    "rowspan",
    "colspan",
];

/// Attributes allowed on one element only, as `element.attribute`.
const ELEMENT_ATTRIBUTES: &[&str] = &[
    "a.href",
    "a.name",
    "a.charset",
    "a.type",
    "a.hreflang",
    "a.rel",
    "a.rev",
    "a.shape",
    "a.coords",
    "img.src",
    "img.border",
    "img.alt",
    "img.longdesc",
    "img.height",
    "img.width",
    "img.usemap",
    "img.ismap",
    "blockquote.cite",
    "q.cite",
    "map.name",
    "area.shape",
    "area.coords",
    "area.href",
    "area.nohref",
    "area.alt",
    "table.summary",
    "table.width",
    "table.border",
    "table.frame",
    "table.rules",
    "table.cellspacing",
    "table.cellpadding",
];

/// Attributes whose value is a URL (checked for the scheme).
const URL_ATTRIBUTES: &[&str] = &["href", "src", "cite", "longdesc", "usemap"];

/// URL schemes a narrative link or image may use; a URL without a scheme is relative.
const URL_SCHEMES: &[&str] = &["http", "https", "ftp", "mailto", "tel", "urn"];

/// Maximum element nesting inside one narrative.
const MAX_DEPTH: usize = 64;

/// Which rule a narrative breaks, with a message that quotes nothing from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XhtmlError {
    pub key: &'static str,
    pub message: String,
}

fn txt1(message: impl Into<String>) -> XhtmlError {
    XhtmlError {
        key: "txt-1",
        message: message.into(),
    }
}

/// Checks `Narrative.div`.
pub(crate) fn check(div: &str) -> Result<(), XhtmlError> {
    let mut p = Parser {
        s: div.as_bytes(),
        pos: 0,
        content: false,
    };
    p.skip_ws();
    if !p.rest().starts_with(b"<div") {
        return Err(txt1(
            "the narrative must be a single <div> element in the XHTML namespace",
        ));
    }
    p.element(0)?;
    p.skip_ws();
    if p.pos != p.s.len() {
        return Err(txt1(
            "the narrative must be a single <div> element (content after it)",
        ));
    }
    if !p.content {
        return Err(XhtmlError {
            key: "txt-2",
            message: "the narrative must have some non-whitespace content".into(),
        });
    }
    Ok(())
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    /// Non-whitespace text or an image was seen (txt-2).
    content: bool,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    /// The input from the current position on.
    fn rest(&self) -> &'a [u8] {
        self.s.get(self.pos..).unwrap_or_default()
    }

    /// Moves past `n` bytes already looked at. The position stays within the input, so the
    /// saturating addition never saturates in practice.
    fn advance(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.s.len());
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_xml_space) {
            self.advance(1);
        }
    }

    fn name(&mut self) -> Result<&str, XhtmlError> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b':' | b'-' | b'_' | b'.'))
        {
            self.advance(1);
        }
        let name = self.s.get(start..self.pos).unwrap_or_default();
        if !name.first().is_some_and(u8::is_ascii_alphabetic) {
            return Err(txt1("the narrative is not well-formed XHTML (bad name)"));
        }
        // ASCII only, so always UTF-8.
        std::str::from_utf8(name).map_err(|_| txt1("the narrative is not well-formed XHTML"))
    }

    /// Parses one element starting at `<`, with its content and end tag.
    fn element(&mut self, depth: usize) -> Result<(), XhtmlError> {
        if depth >= MAX_DEPTH {
            return Err(txt1("the narrative nests elements too deeply"));
        }
        self.advance(1); // '<'
        let name = self.name()?.to_string();
        if !ELEMENTS.contains(&name.as_str()) {
            return Err(txt1(format!(
                "element not allowed in a narrative: <{}>",
                shown_name(&name)
            )));
        }
        let mut seen: Vec<String> = Vec::new();
        let mut xmlns: Option<String> = None;
        loop {
            let had_space = self.peek().is_some_and(is_xml_space);
            self.skip_ws();
            match self.peek() {
                Some(b'>') => {
                    self.advance(1);
                    break;
                }
                Some(b'/') => {
                    if self.rest().get(1) != Some(&b'>') {
                        return Err(txt1("the narrative is not well-formed XHTML"));
                    }
                    self.advance(2);
                    check_namespace(depth, xmlns.as_deref())?;
                    if name == "img" {
                        self.content = true;
                    }
                    return Ok(());
                }
                Some(_) if had_space => {
                    let attribute = self.name()?.to_string();
                    self.skip_ws();
                    if self.peek() != Some(b'=') {
                        return Err(txt1(
                            "the narrative is not well-formed XHTML (attribute without value)",
                        ));
                    }
                    self.advance(1);
                    self.skip_ws();
                    let value = self.attribute_value()?;
                    if seen.contains(&attribute) {
                        return Err(txt1(
                            "the narrative is not well-formed XHTML (duplicate attribute)",
                        ));
                    }
                    check_attribute(&name, &attribute, &value)?;
                    if attribute == "xmlns" {
                        xmlns = Some(value);
                    }
                    seen.push(attribute);
                }
                _ => return Err(txt1("the narrative is not well-formed XHTML")),
            }
        }
        check_namespace(depth, xmlns.as_deref())?;
        if name == "img" {
            self.content = true;
        }
        self.content_until_end(&name, depth)
    }

    /// Parses mixed content up to and including `</name>`.
    fn content_until_end(&mut self, name: &str, depth: usize) -> Result<(), XhtmlError> {
        loop {
            match self.peek() {
                None => return Err(txt1("the narrative is not well-formed XHTML (unclosed element)")),
                Some(b'<') => {
                    let rest = self.rest();
                    if rest.starts_with(b"</") {
                        self.advance(2);
                        let end = self.name()?;
                        if end != name {
                            return Err(txt1(
                                "the narrative is not well-formed XHTML (mismatched end tag)",
                            ));
                        }
                        self.skip_ws();
                        if self.peek() != Some(b'>') {
                            return Err(txt1("the narrative is not well-formed XHTML"));
                        }
                        self.advance(1);
                        return Ok(());
                    } else if rest.starts_with(b"<!--") {
                        self.comment()?;
                    } else if rest.starts_with(b"<!") || rest.starts_with(b"<?") {
                        return Err(txt1(
                            "the narrative must not contain DOCTYPE, CDATA or processing instructions",
                        ));
                    } else {
                        // depth < MAX_DEPTH (checked in `element`), so this cannot saturate.
                        self.element(depth.saturating_add(1))?;
                    }
                }
                Some(b'&') => {
                    self.reference(false)?;
                    self.content = true;
                }
                Some(b'>') if self.s.get(..self.pos).unwrap_or_default().ends_with(b"]]") => {
                    return Err(txt1("the narrative is not well-formed XHTML"));
                }
                Some(c) => {
                    if !is_xml_space(c) {
                        self.content = true;
                    }
                    self.advance(1);
                }
            }
        }
    }

    fn comment(&mut self) -> Result<(), XhtmlError> {
        self.advance(4); // "<!--"
        let rest = self.rest();
        let end = find(rest, b"--")
            .ok_or_else(|| txt1("the narrative is not well-formed XHTML (unclosed comment)"))?;
        // "--" is allowed in a comment only as its end "-->".
        if !rest.get(end..).is_some_and(|r| r.starts_with(b"-->")) {
            return Err(txt1("the narrative is not well-formed XHTML (bad comment)"));
        }
        self.advance(end.saturating_add(3));
        Ok(())
    }

    /// Parses a quoted attribute value and returns it with references decoded.
    fn attribute_value(&mut self) -> Result<String, XhtmlError> {
        let quote = match self.peek() {
            Some(q @ (b'"' | b'\'')) => q,
            _ => {
                return Err(txt1(
                    "the narrative is not well-formed XHTML (unquoted attribute)",
                ));
            }
        };
        self.advance(1);
        let mut out = String::new();
        loop {
            match self.peek() {
                None | Some(b'<') => {
                    return Err(txt1(
                        "the narrative is not well-formed XHTML (bad attribute value)",
                    ));
                }
                Some(c) if c == quote => {
                    self.advance(1);
                    return Ok(out);
                }
                Some(b'&') => {
                    if let Some(c) = self.reference(true)? {
                        out.push(c);
                    }
                }
                Some(_) => {
                    let start = self.pos;
                    while self.peek().is_some_and(|c| c != quote && c != b'&' && c != b'<') {
                        self.advance(1);
                    }
                    // Slicing at ASCII delimiters keeps UTF-8 boundaries.
                    let text = self.s.get(start..self.pos).unwrap_or_default();
                    out.push_str(&String::from_utf8_lossy(text));
                }
            }
        }
    }

    /// Parses `&...;`. In attribute values only the XML entities and character references are
    /// accepted (browsers decode HTML entities such as `&colon;` there, which could hide a
    /// scheme); in text any well-formed entity name is accepted. Returns the decoded character
    /// when known.
    fn reference(&mut self, in_attribute: bool) -> Result<Option<char>, XhtmlError> {
        let rest = self.rest();
        let end = rest
            .iter()
            .take(40)
            .position(|&c| c == b';')
            .ok_or_else(|| txt1("the narrative is not well-formed XHTML (bad '&')"))?;
        // `rest` starts with '&', so `end` >= 1; the body lies between '&' and ';'.
        let body = rest.get(1..end).unwrap_or_default();
        self.advance(end.saturating_add(1));
        if let Some(number) = body.strip_prefix(b"#") {
            let code = match number.strip_prefix(b"x") {
                Some(hex) => parse_radix(hex, 16),
                None => parse_radix(number, 10),
            };
            return match code.and_then(char::from_u32) {
                Some(c) if is_xml_char(c) => Ok(Some(c)),
                _ => Err(txt1(
                    "the narrative is not well-formed XHTML (bad character reference)",
                )),
            };
        }
        let known = match body {
            b"lt" => Some('<'),
            b"gt" => Some('>'),
            b"amp" => Some('&'),
            b"quot" => Some('"'),
            b"apos" => Some('\''),
            _ => None,
        };
        if known.is_some() {
            return Ok(known);
        }
        let well_formed =
            body.first().is_some_and(u8::is_ascii_alphabetic) && body.iter().all(u8::is_ascii_alphanumeric);
        if !well_formed || in_attribute {
            return Err(txt1(
                "the narrative is not well-formed XHTML (unknown entity reference)",
            ));
        }
        Ok(None)
    }
}

fn check_namespace(depth: usize, xmlns: Option<&str>) -> Result<(), XhtmlError> {
    match (depth, xmlns) {
        (0, Some(XHTML_NS)) | (1.., None | Some(XHTML_NS)) => Ok(()),
        _ => Err(txt1(
            "the narrative must be a <div> in the XHTML namespace (xmlns=\"http://www.w3.org/1999/xhtml\")",
        )),
    }
}

fn check_attribute(element: &str, attribute: &str, value: &str) -> Result<(), XhtmlError> {
    let allowed = attribute == "xmlns"
        || ATTRIBUTES.contains(&attribute)
        || ELEMENT_ATTRIBUTES
            .iter()
            .any(|ea| ea.split_once('.') == Some((element, attribute)));
    if !allowed {
        // Event handlers (`on*`) land here too.
        return Err(txt1(format!(
            "attribute not allowed in a narrative: '{}' on <{}>",
            shown_name(attribute),
            shown_name(element)
        )));
    }
    if URL_ATTRIBUTES.contains(&attribute) && !safe_url(element, attribute, value) {
        return Err(txt1(
            "the narrative may link only to http, https, ftp, mailto, tel, urn or relative URLs",
        ));
    }
    if attribute == "style" && !safe_style(value) {
        return Err(txt1(
            "the narrative's style attributes must not load URLs or run expressions",
        ));
    }
    Ok(())
}

/// A URL is safe when it is relative or its scheme is allowed; `img src` may also be an
/// inline raster image. Browsers ignore ASCII whitespace and control characters inside a
/// scheme (`java\tscript:`), so they are removed before looking.
fn safe_url(element: &str, attribute: &str, value: &str) -> bool {
    let compact: String = value
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && !c.is_ascii_control())
        .collect::<String>()
        .to_ascii_lowercase();
    let scheme_end = compact.find([':', '/', '?', '#']);
    let Some(end) = scheme_end.filter(|&i| compact.as_bytes().get(i) == Some(&b':')) else {
        return true; // relative
    };
    let scheme = &compact[..end];
    if URL_SCHEMES.contains(&scheme) {
        return true;
    }
    scheme == "data"
        && element == "img"
        && attribute == "src"
        && ["data:image/png", "data:image/jpeg", "data:image/gif"]
            .iter()
            .any(|p| compact.starts_with(p))
}

/// Inline styles may not run code (`expression(`, `behavior`, `-moz-binding`, `javascript:`),
/// import style sheets, or hide either behind CSS escapes; `url(...)` must be an image URL
/// that `img src` could have (the FHIR publisher's own narratives use relative and `data:`
/// background images).
fn safe_style(value: &str) -> bool {
    let compact: String = value
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .collect::<String>()
        .to_ascii_lowercase();
    let forbidden = [
        "\\",
        "expression(",
        "javascript:",
        "@import",
        "behavior:",
        "-moz-binding",
    ];
    if forbidden.iter().any(|f| compact.contains(f)) {
        return false;
    }
    compact.split("url(").skip(1).all(|rest| {
        let Some((argument, _)) = rest.split_once(')') else {
            return false;
        };
        let argument = argument.trim_matches(|c| c == '"' || c == '\'');
        safe_url("img", "src", argument)
    })
}

/// An element or attribute name shown in a message: names only, short, never text content.
fn shown_name(name: &str) -> String {
    name.chars().take(32).collect()
}

fn is_xml_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn parse_radix(digits: &[u8], radix: u32) -> Option<u32> {
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(digits).ok()?, radix).ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn div(inner: &str) -> String {
        format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{inner}</div>")
    }

    #[test]
    fn valid_narratives() {
        let cases = [
            div("Peter"),
            // From the R4 Patient example (pat-example).
            div("\n      <table>\n        <tbody>\n          <tr>\n            <td>Name</td>\n            <td>Peter James \n              <b>Chalmers</b> (&quot;Jim&quot;)\n            </td>\n          </tr>\n          <tr>\n            <td>Address</td>\n            <td>534 Erewhon, Pleasantville, Vic, 3999</td>\n          </tr>\n          <tr>\n            <td>Contacts</td>\n            <td>Home: unknown. Work: (03) 5555 6473</td>\n          </tr>\n          <tr>\n            <td>Id</td>\n            <td>MRN: 12345 (Acme Healthcare)</td>\n          </tr>\n        </tbody>\n      </table>\n    "),
            // From the R4 Observation example (f001).
            div("<p>\n        <b>Generated Narrative with Details</b>\n      </p><p><b>status</b>: final</p><p><b>value</b>: 6.3 mmol/l<span> (Details: UCUM code mmol/L = 'mmol/L')</span></p><h3>ReferenceRanges</h3><table><tr><td>-</td><td><b>Low</b></td></tr><tr><td>*</td><td>3.1 mmol/l<span> (Details: UCUM code mmol/L = 'mmol/L')</span></td></tr></table>"),
            "<div xmlns='http://www.w3.org/1999/xhtml' lang=\"en\" xml:lang=\"en\"><p style=\"color: red; font-weight: bold\">x</p></div>".to_string(),
            div("<a href=\"http://example.org/a?b=1&amp;c=2\">link</a> <a name=\"top\">t</a> <a href=\"#c1\">c</a>"),
            div("<img src=\"#pic\" alt=\"x\"/>"),
            div("<img src=\"data:image/png;base64,iVBORw0KGgo=\"/>"),
            div("<!-- a comment --><ul><li>one &amp; two &#169; &#x2014; &nbsp;</li></ul><br/><hr />"),
            div("<pre>  spaced </pre><p xmlns=\"http://www.w3.org/1999/xhtml\">ns again</p>"),
            div("a &gt; b, \u{e9}t\u{e9}"),
            // As the FHIR publisher writes them (R4 StructureDefinition narratives).
            div("<table><tr><td style=\"vertical-align: top; white-space: nowrap; background-image: url(tbl_bck1.png)\" class=\"hierarchy\"><img src=\"icon_element.gif\" alt=\".\" style=\"background-color: white\" class=\"hierarchy\"/></td></tr></table>"),
            div("<td style=\"padding:0px 4px; background-image: url(data: image/png;base64,iVBORw0KGgo=)\">x</td>"),
            div("<a href=\"ftp://ftp.example.org/a.xml\">spec</a>"),
        ];
        for c in cases {
            assert_eq!(check(&c), Ok(()), "{c}");
        }
    }

    #[test]
    fn invalid_narratives() {
        let cases: &[(&str, &str)] = &[
            ("plain text", "txt-1"),
            ("<div>no namespace</div>", "txt-1"),
            ("<div xmlns=\"http://example.org\">x</div>", "txt-1"),
            ("<p xmlns=\"http://www.w3.org/1999/xhtml\">x</p>", "txt-1"),
            (&div("<script>alert(1)</script>"), "txt-1"),
            (&div("<SCRIPT>alert(1)</SCRIPT>"), "txt-1"),
            (&div("<img src=\"x\" onerror=\"alert(1)\"/>"), "txt-1"),
            (&div("<p onclick=\"alert(1)\">x</p>"), "txt-1"),
            (&div("<a href=\"javascript:alert(1)\">x</a>"), "txt-1"),
            (&div("<a href=\" JaVa&#x09;Script:alert(1)\">x</a>"), "txt-1"),
            (&div("<a href=\"javascript&colon;alert(1)\">x</a>"), "txt-1"),
            (&div("<a href=\"vbscript:x\">x</a>"), "txt-1"),
            (&div("<a href=\"data:text/html,x\">x</a>"), "txt-1"),
            (&div("<img src=\"data:image/svg+xml,x\"/>"), "txt-1"),
            (
                &div("<p style=\"background:url(javascript:alert(1))\">x</p>"),
                "txt-1",
            ),
            (
                &div("<p style=\"background:url('data:text/html,x')\">x</p>"),
                "txt-1",
            ),
            (&div("<p style=\"background:u\\72l(x)\">x</p>"), "txt-1"),
            (&div("<p style=\"@import 'http://x/a.css'\">x</p>"), "txt-1"),
            (&div("<p style=\"width: expression(alert(1))\">x</p>"), "txt-1"),
            (&div("<iframe src=\"http://x\"></iframe>"), "txt-1"),
            (&div("<form><input/></form>"), "txt-1"),
            (&div("<object data=\"x\"></object>"), "txt-1"),
            (&div("<svg><script>x</script></svg>"), "txt-1"),
            (&div("<p>unclosed"), "txt-1"),
            (&div("<p>a</b>"), "txt-1"),
            (&div("<p class=x>a</p>"), "txt-1"),
            (&div("<p class=\"a\" class=\"b\">a</p>"), "txt-1"),
            (&div("a & b"), "txt-1"),
            (&div("&#0;"), "txt-1"),
            (&div("<![CDATA[<script>x</script>]]>"), "txt-1"),
            (&div("<?xml-stylesheet href=\"x\"?>"), "txt-1"),
            (&format!("{}<p>after</p>", div("x")), "txt-1"),
            (
                &div("<x:p xmlns:x=\"http://www.w3.org/1999/xhtml\">a</x:p>"),
                "txt-1",
            ),
            (&div("<p xmlns=\"http://www.w3.org/2000/svg\">a</p>"), "txt-1"),
            (&div(&"<b>".repeat(100)), "txt-1"),
            (&div("   \n "), "txt-2"),
            (&div("<p> </p><br/>"), "txt-2"),
            ("<div xmlns=\"http://www.w3.org/1999/xhtml\"/>", "txt-2"),
        ];
        for (c, key) in cases {
            let e = check(c).expect_err(c);
            assert_eq!(e.key, *key, "{c}: {}", e.message);
            assert!(!e.message.contains("alert"), "{}", e.message);
        }
    }

    /// Random splices of narrative fragments never panic (and never loop).
    #[test]
    fn total_on_random_fragments() {
        const PARTS: &[&str] = &[
            "<div xmlns=\"http://www.w3.org/1999/xhtml\">",
            "</div>",
            "<p>",
            "</p>",
            "<b",
            ">",
            "/>",
            " style=\"",
            " href='",
            "url(",
            "\"",
            "'",
            "&",
            "&#",
            "&#x",
            ";",
            "<!--",
            "-->",
            "<!",
            "<?",
            "]]>",
            "=",
            " ",
            "\u{e9}",
            "x",
            "javascript:",
            "\t",
            "<img src=\"#a\"/>",
            "&amp;",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut text = String::new();
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            for _ in 0..(seed >> 60) + 1 {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let i = usize::try_from(seed >> 33).unwrap_or(0) % PARTS.len();
                text.push_str(PARTS[i]);
            }
            let _ = check(&text);
        }
    }

    #[test]
    fn total_on_arbitrary_prefixes() {
        let sample = div(
            "<p style=\"a\">x &amp; &#x41; <!-- c --><img src=\"#a\"/><a href='http://x'>y</a></p>\u{e9}",
        );
        for end in 0..=sample.len() {
            if let Some(prefix) = sample.get(..end) {
                let _ = check(prefix);
            }
        }
    }
}
