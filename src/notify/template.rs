//! Message templates with ma1sd's `%NAME%` placeholders.
//!
//! An e-mail template is a message template: headers (at least `Subject:` and
//! `Content-Type:`), an empty line, the body, single-part or `multipart/*`. Rendering
//! substitutes placeholders *for where they land*: in headers, values lose control
//! characters (no header injection) and non-ASCII headers become RFC 2047 encoded words;
//! in HTML parts values are HTML-escaped, in JSON parts escaped for a JSON string, in
//! other (text) parts left as they are; parts with non-ASCII text are sent in base64. `From`, `To`, `Date`, `Message-ID` and `MIME-Version` are always ours.

use base64::Engine as _;

/// Placeholder values, by name (without the `%`).
#[derive(Debug, Clone, Default)]
pub struct Vars(Vec<(&'static str, String)>);

impl Vars {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&mut self, name: &'static str, value: impl Into<String>) -> &mut Self {
        let value = value.into();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
        self
    }

    /// Sets a user-supplied value cut to `max` characters (with `…`), as Sydent does for
    /// names that end up in subjects and bodies.
    pub fn set_truncated(&mut self, name: &'static str, value: &str, max: usize) -> &mut Self {
        self.set(name, truncate(value, max))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `value` cut to at most `max` characters, `…` marking the cut.
pub fn truncate(value: &str, max: usize) -> String {
    if value.chars().count() <= max {
        return value.to_owned();
    }
    let mut out: String = value.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Longest subject we send (characters), whatever the template and values make of it.
const MAX_SUBJECT: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    Text,
    Html,
    /// Inside a JSON string: the template puts the quotes around the placeholder.
    Json,
    Header,
}

impl Escape {
    /// How values are escaped in a part of this (lower-cased) content type.
    fn for_part(content_type: &str) -> Self {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        if media == "text/html" || media == "application/xhtml+xml" {
            Escape::Html
        } else if media == "application/json" || media.ends_with("+json") {
            Escape::Json
        } else {
            Escape::Text
        }
    }
}

/// Values are single lines everywhere: a line break in a value could end a header, or
/// start a MIME boundary line inside a body, so control characters become spaces.
fn escape_into(out: &mut String, value: &str, escape: Escape) {
    let clean = value.chars().map(|c| if c.is_control() { ' ' } else { c });
    match escape {
        Escape::Text | Escape::Header => out.extend(clean),
        Escape::Html => {
            for c in clean {
                match c {
                    '&' => out.push_str("&amp;"),
                    '<' => out.push_str("&lt;"),
                    '>' => out.push_str("&gt;"),
                    '"' => out.push_str("&quot;"),
                    '\'' => out.push_str("&#39;"),
                    c => out.push(c),
                }
            }
        }
        Escape::Json => {
            for c in clean {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    // `<`, `>` and `&` too, so the JSON may sit inside HTML unharmed.
                    '<' => out.push_str("\\u003c"),
                    '>' => out.push_str("\\u003e"),
                    '&' => out.push_str("\\u0026"),
                    c => out.push(c),
                }
            }
        }
    }
}

/// Replaces every `%NAME%` whose name is known; anything else is left as written.
fn substitute(text: &str, vars: &Vars, escape: Escape) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        let value = (name_len > 0 && after[name_len..].starts_with('%'))
            .then(|| vars.get(&after[..name_len]))
            .flatten();
        match value {
            Some(v) => {
                escape_into(&mut out, v, escape);
                rest = &after[name_len + 1..];
            }
            None => {
                out.push('%');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A plain-text template (SMS).
pub fn render_text(template: &str, vars: &Vars) -> String {
    substitute(template, vars, Escape::Text)
        .trim_end()
        .to_owned()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("the template has no empty line between its headers and its body")]
    NoBody,
    #[error("the template has no Subject header")]
    NoSubject,
    #[error("malformed header line {0:?}")]
    BadHeader(String),
    #[error("multipart without a boundary parameter")]
    NoBoundary,
}

/// Headers we set ourselves; the template's versions are dropped.
const OURS: &[&str] = &["from", "to", "date", "message-id", "mime-version"];

type Headers = Vec<(String, String)>;

/// Splits an entity (headers, empty line, body) into unfolded headers and the body.
fn split_entity(text: &str) -> Result<(Headers, &str), TemplateError> {
    let (head, body) = match text.find("\n\n") {
        Some(i) => (&text[..i], &text[i + 2..]),
        None => return Err(TemplateError::NoBody),
    };
    let mut headers: Headers = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            match headers.last_mut() {
                Some((_, value)) => {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                None => return Err(TemplateError::BadHeader(line.to_owned())),
            }
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .filter(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| TemplateError::BadHeader(line.to_owned()))?;
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    Ok((headers, body))
}

fn header<'h>(headers: &'h Headers, name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The `boundary` parameter of a Content-Type value.
fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (k, v) = param.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// RFC 2047 `B` encoded words for a header value with non-ASCII text, folded so no
/// word passes 75 characters.
pub fn encode_header_value(value: &str) -> String {
    if value.is_ascii() {
        return value.to_owned();
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in value.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(chunk);
    }
    words
        .iter()
        .map(|w| {
            format!(
                "=?UTF-8?B?{}?=",
                base64::engine::general_purpose::STANDARD.encode(w.as_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join("\r\n ")
}

/// Renders one entity's body (recursing into multiparts) and returns the headers to
/// write for it with the rendered body, CRLF line endings throughout.
fn render_entity(
    mut headers: Headers,
    body: &str,
    vars: &Vars,
) -> Result<(Headers, String), TemplateError> {
    let content_type = header(&headers, "content-type")
        .unwrap_or("text/plain; charset=UTF-8")
        .to_owned();
    let lower = content_type.to_ascii_lowercase();
    if lower.starts_with("multipart/") {
        let boundary = boundary(&content_type).ok_or(TemplateError::NoBoundary)?;
        let open = format!("--{boundary}");
        let close = format!("--{boundary}--");
        let mut out = String::new();
        let mut part: Option<String> = None;
        let flush = |part: Option<String>, out: &mut String| -> Result<(), TemplateError> {
            if let Some(text) = part {
                let (h, b) = split_entity(&text)?;
                let (h, b) = render_entity(h, b, vars)?;
                for (n, v) in h {
                    out.push_str(&format!("{n}: {v}\r\n"));
                }
                out.push_str("\r\n");
                out.push_str(&b);
            }
            Ok(())
        };
        let mut closed = false;
        for line in body.lines() {
            if line.trim_end() == close {
                flush(part.take(), &mut out)?;
                out.push_str(&close);
                out.push_str("\r\n");
                closed = true;
                break;
            } else if line.trim_end() == open {
                flush(part.take(), &mut out)?;
                out.push_str(&open);
                out.push_str("\r\n");
                part = Some(String::new());
            } else if let Some(p) = part.as_mut() {
                p.push_str(line);
                p.push('\n');
            }
            // Preamble lines are dropped: no reader shows them.
        }
        if !closed {
            flush(part.take(), &mut out)?;
            out.push_str(&close);
            out.push_str("\r\n");
        }
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case("content-transfer-encoding"));
        return Ok((headers, out));
    }
    let text = substitute(body, vars, Escape::for_part(&lower));
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case("content-transfer-encoding"));
    let plain = text.is_ascii() && text.lines().all(|l| l.len() <= 998);
    let encoded = if plain {
        headers.push(("Content-Transfer-Encoding".into(), "7bit".into()));
        // No bare CR may reach the SMTP dialogue (smuggling): lines end in CRLF only.
        let mut out = text
            .lines()
            .map(|l| l.replace('\r', ""))
            .collect::<Vec<_>>()
            .join("\r\n");
        out.push_str("\r\n");
        out
    } else {
        headers.push(("Content-Transfer-Encoding".into(), "base64".into()));
        let b64 = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
        let mut out = String::with_capacity(b64.len() + b64.len() / 38);
        for chunk in b64.as_bytes().chunks(76) {
            out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            out.push_str("\r\n");
        }
        out
    };
    Ok((headers, encoded))
}

/// The fixed headers of one message.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    /// Already formatted `From:` value (`name <address>`, encoded as needed).
    pub from: &'a str,
    pub to: &'a str,
    pub date: &'a str,
    pub message_id: &'a str,
}

/// Renders an e-mail template into the bytes of a complete message.
pub fn render_email(
    template: &str,
    vars: &Vars,
    envelope: &Envelope<'_>,
) -> Result<Vec<u8>, TemplateError> {
    let normalised = template.replace("\r\n", "\n");
    let (mut headers, body) = split_entity(&normalised)?;
    headers.retain(|(n, _)| !OURS.iter().any(|o| n.eq_ignore_ascii_case(o)));
    if header(&headers, "subject").is_none() {
        return Err(TemplateError::NoSubject);
    }
    for (name, value) in &mut headers {
        let rendered = substitute(value, vars, Escape::Header);
        let structured = !name.eq_ignore_ascii_case("subject");
        *value = if structured {
            rendered
        } else {
            encode_header_value(&truncate(rendered.trim(), MAX_SUBJECT))
        };
    }
    let (headers, body) = render_entity(headers, body, vars)?;
    let mut out = String::with_capacity(body.len() + 512);
    out.push_str(&format!("From: {}\r\n", envelope.from));
    out.push_str(&format!("To: {}\r\n", envelope.to));
    out.push_str(&format!("Date: {}\r\n", envelope.date));
    out.push_str(&format!("Message-ID: {}\r\n", envelope.message_id));
    out.push_str("MIME-Version: 1.0\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope<'static> {
        Envelope {
            from: "mxisd <id@example.org>",
            to: "a@example.org",
            date: "Mon, 30 Nov 2026 10:00:00 +0000",
            message_id: "<x@example.org>",
        }
    }

    #[test]
    fn placeholders_are_replaced_and_unknown_ones_kept() {
        let mut v = Vars::new();
        v.set("TOKEN", "abc").set("A_B", "x");
        assert_eq!(
            render_text("%TOKEN% 100% %NOPE% %A_B%%TOKEN%", &v),
            "abc 100% %NOPE% xabc"
        );
        assert_eq!(render_text("%%TOKEN%%", &v), "%abc%");
    }

    #[test]
    fn multipart_escapes_html_and_encodes_non_ascii() {
        let t = "Subject: Hello %NAME%\nX-Note: %INJECT%\nFrom: evil@x\nContent-Type: multipart/alternative; boundary=\"b1\"\n\n--b1\nContent-Type: text/plain; charset=UTF-8\n\nHi %NAME% %LINK% %INJECT%\n--b1\nContent-Type: text/html; charset=UTF-8\n\n<a href=\"%LINK%\">%NAME%</a>\n--b1--\n";
        let mut v = Vars::new();
        v.set("NAME", "<b>Zoé</b>")
            .set(
                "INJECT",
                "x\r\nBcc: victim@x\n--b1\nContent-Type: text/html\n\n<evil>",
            )
            .set("LINK", "https://x/?a=1&b=2");
        let out = String::from_utf8(render_email(t, &v, &env()).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        // One From (ours), no injected header, subject encoded.
        assert_eq!(head.matches("From:").count(), 1);
        assert!(!head.contains("evil@x"));
        assert!(!head.lines().any(|l| l.starts_with("Bcc")));
        assert!(head.contains("X-Note: x  Bcc: victim@x --b1 Content-Type: text/html  <evil>"));
        // The injected boundary stayed inside its line: still exactly two parts.
        assert_eq!(body.matches("--b1\r\n").count(), 2);
        assert!(head.contains("Subject: =?UTF-8?B?"));
        // Parts: the text one has non-ASCII → base64; the HTML one is escaped.
        let parts: Vec<&str> = body.split("--b1").collect();
        assert!(parts[1].contains("Content-Transfer-Encoding: base64"));
        let html = parts[2];
        let encoded = html.split("\r\n\r\n").nth(1).unwrap().replace("\r\n", "");
        let decoded = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap(),
        )
        .unwrap();
        assert!(decoded.contains("href=\"https://x/?a=1&amp;b=2\""));
        assert!(decoded.contains("&lt;b&gt;Zoé&lt;/b&gt;"));
        assert!(body.trim_end().ends_with("--b1--"));
        assert!(!out.replace("\r\n", "").contains('\n'));
    }

    #[test]
    fn each_part_escapes_for_its_content_type() {
        let t = "Subject: x\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nT %V%\n--b\nContent-Type: TEXT/HTML; charset=UTF-8\n\n<p title=\"%V%\">%V%</p>\n--b\nContent-Type: application/json\n\n{\"v\": \"%V%\", \"n\": 1}\n--b\nContent-Type: application/ld+json\n\n[\"%V%\"]\n--b--\n";
        let value = r#"He said "hi" <b>&amp; \o/ 'ok'"#;
        let mut v = Vars::new();
        v.set("V", format!("{value}\nnext"));
        let out = String::from_utf8(render_email(t, &v, &env()).unwrap()).unwrap();
        let parts: Vec<&str> = out.split("--b\r\n").skip(1).collect();
        let body = |part: &str| {
            part.split_once("\r\n\r\n")
                .unwrap()
                .1
                .trim_end_matches("--b--\r\n")
                .trim_end()
                .to_owned()
        };
        // Text: as it is (control characters only become spaces).
        assert_eq!(body(parts[0]), format!("T {value} next"));
        // HTML: escaped, in text and in attributes.
        assert_eq!(
            body(parts[1]),
            "<p title=\"He said &quot;hi&quot; &lt;b&gt;&amp;amp; \\o/ &#39;ok&#39; next\">He said &quot;hi&quot; &lt;b&gt;&amp;amp; \\o/ &#39;ok&#39; next</p>"
        );
        // JSON: still JSON, holding the value.
        let json: serde_json::Value = serde_json::from_str(&body(parts[2])).unwrap();
        assert_eq!(json["v"], format!("{value} next"));
        assert_eq!(json["n"], 1);
        let json: serde_json::Value = serde_json::from_str(&body(parts[3])).unwrap();
        assert_eq!(json[0], format!("{value} next"));
    }

    #[test]
    fn ascii_single_part_stays_readable() {
        let t = "Subject: Code\nContent-Type: text/plain\n\nYour code: %T%\n";
        let mut v = Vars::new();
        v.set("T", "123456");
        let out = String::from_utf8(render_email(t, &v, &env()).unwrap()).unwrap();
        assert!(out.contains("Content-Transfer-Encoding: 7bit\r\n"));
        assert!(out.ends_with("\r\n\r\nYour code: 123456\r\n"));
    }

    #[test]
    fn broken_templates_are_errors() {
        let v = Vars::new();
        assert_eq!(
            render_email("Subject: x", &v, &env()),
            Err(TemplateError::NoBody)
        );
        assert_eq!(
            render_email("Content-Type: text/plain\n\nx", &v, &env()),
            Err(TemplateError::NoSubject)
        );
        assert_eq!(
            render_email("Subject: x\nContent-Type: multipart/mixed\n\nx", &v, &env()),
            Err(TemplateError::NoBoundary)
        );
    }

    #[test]
    fn names_are_truncated_and_subjects_capped() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("a very long room name indeed", 10), "a very lo…");
        let mut v = Vars::new();
        v.set_truncated("N", &"é".repeat(50), 20);
        assert_eq!(v.get("N").unwrap().chars().count(), 20);
        v.set("LONG", "x".repeat(5000));
        let t = "Subject: %LONG%\nContent-Type: text/plain\n\nb\n";
        let out = String::from_utf8(render_email(t, &v, &env()).unwrap()).unwrap();
        assert!(out.lines().all(|l| l.len() < 998));
    }

    #[test]
    fn long_non_ascii_subjects_are_folded_into_short_words() {
        let value = "é".repeat(100);
        let encoded = encode_header_value(&value);
        for word in encoded.split("\r\n ") {
            assert!(word.len() <= 75, "{word}");
        }
    }
}
