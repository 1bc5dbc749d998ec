//! The assistant's answers are Markdown, rendered here on the server and made inert: model output
//! echoes incident text anyone could have written. Raw HTML (blocks and inline) is shown as text,
//! never passed through; links keep only `http`, `https`, `mailto` and relative targets (anything
//! else becomes a link to nowhere); images become links, so an answer cannot make the browser
//! fetch a URL by itself (a way to leak data); no attribute but `href`, `title` and a fixed `rel` is
//! ever written.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag, TagEnd};

/// `markdown` as safe HTML.
pub fn render(markdown: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let events = Parser::new_ext(markdown, options).map(|event| match event {
        Event::Html(text) | Event::InlineHtml(text) => Event::Text(text),
        Event::Start(Tag::Link {
            dest_url, title, ..
        }) => Event::InlineHtml(link_open(&dest_url, &title, "").into()),
        Event::Start(Tag::Image {
            dest_url, title, ..
        }) => Event::InlineHtml(link_open(&dest_url, &title, "image: ").into()),
        Event::End(TagEnd::Link | TagEnd::Image) => Event::InlineHtml(CowStr::Borrowed("</a>")),
        other => other,
    });
    let mut html = String::with_capacity(markdown.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, events);
    html
}

/// Text escaped for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// Whether a link target is `http`, `https`, `mailto` or relative. Browsers drop tabs, newlines
/// and leading control characters from URLs, so they are dropped before the scheme is read.
pub fn is_safe_url(url: &str) -> bool {
    let cleaned = clean_url(url).to_ascii_lowercase();
    match cleaned.find([':', '/', '?', '#']) {
        Some(index) if cleaned.as_bytes()[index] == b':' => {
            matches!(&cleaned[..index], "http" | "https" | "mailto")
        }
        _ => true,
    }
}

fn clean_url(url: &str) -> String {
    url.chars()
        .filter(|character| !character.is_ascii_whitespace() && !character.is_control())
        .collect()
}

fn link_open(url: &str, title: &str, prefix: &str) -> String {
    let title = if title.is_empty() {
        String::new()
    } else {
        format!(" title=\"{}\"", escape(title))
    };
    if is_safe_url(url) {
        format!(
            "<a href=\"{}\" rel=\"nofollow noopener noreferrer\"{title}>{prefix}",
            escape(&clean_url(url))
        )
    } else {
        format!("<a class=\"removed-link\" title=\"an unsafe link was removed\">{prefix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders `markdown` and checks that the HTML contains `expected`, that every tag is one
    /// Markdown makes, and that no tag carries anything active.
    fn check(markdown: &str, expected: &str) {
        let html = render(markdown);
        assert!(
            html.contains(expected),
            "{markdown:?} gave {html:?}, expected {expected:?}"
        );
        for tag in tags(&html) {
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            assert!(
                ALLOWED_TAGS.contains(&name.as_str()),
                "{markdown:?} gave the tag <{tag}>"
            );
            // Attribute names are what is outside the quoted values; values are escaped.
            let names: String = tag.split('"').step_by(2).collect();
            for bad in [" on", " src=", " style="] {
                assert!(
                    !names.to_ascii_lowercase().contains(bad),
                    "{markdown:?} gave the tag <{tag}>"
                );
            }
            for bad in ["javascript:", "data:", "vbscript:"] {
                assert!(
                    !tag.to_ascii_lowercase().contains(bad),
                    "{markdown:?} gave the tag <{tag}>"
                );
            }
        }
    }

    /// The insides of the real tags of `html` (escaped text has no `<`).
    fn tags(html: &str) -> Vec<&str> {
        html.split('<')
            .skip(1)
            .map(|rest| rest.split('>').next().unwrap_or(""))
            .collect()
    }

    const ALLOWED_TAGS: &[&str] = &[
        "p",
        "strong",
        "em",
        "code",
        "pre",
        "a",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "ul",
        "ol",
        "li",
        "blockquote",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "br",
        "del",
    ];

    #[test]
    fn plain_markdown_renders() {
        check("**bold** and `code`", "<strong>bold</strong>");
        check("| a | b |\n|---|---|\n| 1 | 2 |", "<td>1</td>");
        check(
            "[docs](https://example.com/a?b=1&c=2)",
            "<a href=\"https://example.com/a?b=1&amp;c=2\" rel=\"nofollow noopener noreferrer\">docs</a>",
        );
        check("[rel](/conversations)", "<a href=\"/conversations\"");
        check(
            "[mail](mailto:ops@example.com)",
            "href=\"mailto:ops@example.com\"",
        );
    }

    #[test]
    fn hostile_markdown_is_inert() {
        check("<script>alert(1)</script>", "&lt;script&gt;");
        check("text <script>alert(1)</script> text", "&lt;script&gt;");
        check(
            "<img src=x onerror=alert(1)>",
            "&lt;img src=x onerror=alert(1)&gt;",
        );
        check("[x](javascript:alert(1))", "removed-link");
        check("[x](JaVaScRiPt:alert(1))", "removed-link");
        check("[x](java\tscript:alert(1))", "");
        check("[x](jav&#x61;script:alert(1))", "removed-link");
        check("[x](&#106;avascript:alert(1))", "removed-link");
        check("[x](data:text/html;base64,PHNjcmlwdD4=)", "removed-link");
        check("[x](vbscript:msgbox)", "removed-link");
        check("<javascript:alert(1)>", "");
        check("![x](https://evil.example/pixel?secret=1)", "image: x</a>");
        check("![x](javascript:alert(1))", "removed-link");
        check(
            "[x](https://example.com \"t\\\" onmouseover=\\\"alert(1)\")",
            "title=\"t&quot; onmouseover=&quot;alert(1)\"",
        );
        check("<a href=\"javascript:alert(1)\">x</a>", "&lt;a href=");
        check("&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;script&gt;");
        check("<div\nonclick=alert(1)>block</div>", "&lt;div");
        check("```\n<script>alert(1)</script>\n```", "&lt;script&gt;");
        check("[a](<javascript:alert(1)>)", "removed-link");
        check("[a][r]\n\n[r]: javascript:alert(1)", "removed-link");
        check("<<script>script>alert(1)<</script>/script>", "&lt;");
        check("<svg><script>alert(1)</script></svg>", "&lt;svg&gt;");
        check("<style>body{display:none}</style>", "&lt;style&gt;");
    }

    #[test]
    fn urls_are_judged_by_their_scheme() {
        for safe in [
            "https://a.example",
            "http://a",
            "mailto:x@y",
            "/x",
            "x/y",
            "#top",
            "?q=1",
        ] {
            assert!(is_safe_url(safe), "{safe}");
        }
        for unsafe_url in [
            " javascript:x",
            "\u{1}javascript:x",
            "JAVASCRIPT:x",
            "data:x",
            "file:///etc/passwd",
            "a:b/c",
        ] {
            assert!(!is_safe_url(unsafe_url), "{unsafe_url}");
        }
    }
}
