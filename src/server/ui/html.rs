//! HTML escaping: everything the console shows from an event (body,
//! headers, ids, errors) is attacker-controlled, and goes through [`esc`].
//!
//! Text and attribute values get the five HTML metacharacters replaced, so
//! no value can open or close a tag (`<script>`, `</textarea>`) or leave a
//! quoted attribute. Control characters (which browsers drop or turn into
//! parse errors, and which can hide text) are shown visibly as `\x1b`-style
//! escapes. Invalid UTF-8 never reaches here: bytes are decoded lossily
//! (U+FFFD) before.

use std::fmt::Write;

/// Escape `s` for an HTML text node or a double- or single-quoted
/// attribute value.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    push_esc(&mut out, s);
    out
}

/// [`esc`], appending to `out`.
pub fn push_esc(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Escape a value for a URL query component (then [`esc`] it for the
/// attribute it goes in).
pub fn url(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Bytes as text for display: valid UTF-8 as is, anything else decoded
/// lossily; then escaped.
pub fn esc_bytes(b: &[u8]) -> String {
    esc(&String::from_utf8_lossy(b))
}

/// A page: the layout around `body`, with the navigation. `title` is
/// escaped here; `body` must already be HTML.
pub fn page(title: &str, active: &str, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    out.push_str("<meta name=\"referrer\" content=\"same-origin\">");
    let _ = write!(out, "<title>{} · webhookd</title>", esc(title));
    out.push_str("<link rel=\"stylesheet\" href=\"/ui/static/ui.css\">");
    out.push_str("<link rel=\"icon\" href=\"/ui/static/icon.svg\" type=\"image/svg+xml\">");
    out.push_str("<script src=\"/ui/static/ui.js\" defer></script></head><body>");
    out.push_str("<header><a class=\"brand\" href=\"/ui/\">webhookd</a><nav>");
    for (href, name) in [
        ("/ui/", "Events"),
        ("/ui/dead", "Dead letters"),
        ("/ui/glance", "At a glance"),
    ] {
        let cls = if name == active {
            " class=\"active\""
        } else {
            ""
        };
        let _ = write!(out, "<a href=\"{href}\"{cls}>{name}</a>");
    }
    out.push_str("</nav></header><main>");
    out.push_str(body);
    out.push_str("</main></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_quotes_and_controls() {
        assert_eq!(
            esc("</textarea><script>alert('x')</script>&\"\u{1b}[31m\0\u{85}"),
            "&lt;/textarea&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;\\u{1b}[31m\\u{0}\\u{85}"
        );
        assert_eq!(esc("a\nb\tc ü"), "a\nb\tc ü");
        assert_eq!(esc_bytes(b"\xff<"), "\u{fffd}&lt;");
    }

    #[test]
    fn url_components_are_encoded() {
        assert_eq!(url("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }
}
