//! HTML → plain text: a small, careful tag stripper with entity decoding.
//!
//! Rules (in order):
//! - Pages that only redirect (`<meta http-equiv="refresh">` and no `<main>`) give no text.
//! - When the page has a `<main>` element, only the text inside the first `<main>` … last `</main>` is kept
//!   (documentation generators such as mdBook and rustdoc put navigation, sidebars and footers outside it).
//! - Comments, `<!…>`/`<?…>` declarations and the contents of `script`, `style`, `noscript`, `template`,
//!   `head`, `nav`, `svg`, `button` and `select` elements are dropped.
//! - Block-level tags (`p`, `div`, `li`, `h1`–`h6`, `br`, `tr`, `pre`, …) become line breaks; whitespace is
//!   collapsed as a browser would, except inside `<pre>` where it is kept verbatim.
//! - Character references are decoded: numeric (`&#8217;`, `&#x2019;`) and the common named ones
//!   (`&amp;`, `&lt;`, `&nbsp;`, `&mdash;`, …). Unknown names are left as written; invalid code points become
//!   U+FFFD.
//!
//! No dependency is pulled in for this: a full HTML5 parser (html5ever) would cost far more compile time
//! than the documents we read need.

/// Elements whose whole content is dropped.
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "template", "head", "nav", "svg", "button", "select", "iframe",
    "object",
];

/// Elements that start or end a line of text.
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "br",
    "dd",
    "details",
    "dialog",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "main",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "ul",
    "title",
    "body",
    "html",
];

/// Converts an HTML document to plain text (see the module docs for the rules).
pub fn html_to_text(html: &str) -> String {
    let lower_has = |needle: &str| find_ci(html, needle, 0).is_some();
    let main_start = find_tag_open(html, "main", 0);
    if main_start.is_none() && lower_has("http-equiv=\"refresh\"") {
        return String::new();
    }
    let body = match main_start {
        Some(start) => {
            let end = rfind_ci(html, "</main").unwrap_or(html.len());
            &html[start..end.max(start)]
        }
        None => html,
    };
    let mut out = TextSink::default();
    let bytes = body.as_bytes();
    let mut i = 0;
    let mut text_start = 0;
    while i < bytes.len() {
        if bytes[i] != b'<' {
            i += 1;
            continue;
        }
        out.push_text(&body[text_start..i]);
        i = skip_markup(body, i, &mut out);
        text_start = i;
    }
    out.push_text(&body[text_start..]);
    out.finish()
}

/// Handles the markup starting at `bytes[i] == b'<'`; returns the index just after it.
fn skip_markup(s: &str, i: usize, out: &mut TextSink) -> usize {
    let rest = &s[i..];
    if rest.starts_with("<!--") {
        return s[i + 4..].find("-->").map_or(s.len(), |p| i + 4 + p + 3);
    }
    let b = rest.as_bytes();
    if b.len() < 2 {
        // A lone '<' at the end: text.
        out.push_text(rest);
        return s.len();
    }
    if b[1] == b'!' || b[1] == b'?' {
        return s[i..].find('>').map_or(s.len(), |p| i + p + 1);
    }
    let closing = b[1] == b'/';
    let name_start = i + 1 + usize::from(closing);
    let name_end = s[name_start..]
        .find(|c: char| !c.is_ascii_alphanumeric() && c != '-')
        .map_or(s.len(), |p| name_start + p);
    if name_end == name_start {
        // `<` not followed by a tag name (e.g. `a < b`): it is text.
        out.push_text("<");
        return i + 1;
    }
    let name = s[name_start..name_end].to_ascii_lowercase();
    let tag_end = find_tag_end(s, name_end);
    if !closing && SKIPPED.contains(&name.as_str()) && !s[..tag_end].ends_with("/>") {
        // Drop everything up to the matching close tag (these elements do not nest in practice).
        let close = format!("</{name}");
        return match find_ci(s, &close, tag_end) {
            Some(p) => find_tag_end(s, p + close.len()),
            None => s.len(),
        };
    }
    if name == "pre" {
        if closing {
            out.pre_depth = out.pre_depth.saturating_sub(1);
        } else {
            out.pre_depth += 1;
        }
    }
    if BLOCKS.contains(&name.as_str()) {
        out.line_break();
    }
    tag_end
}

/// Index just after the `>` closing a tag whose attributes start at `from` (quotes respected).
fn find_tag_end(s: &str, from: usize) -> usize {
    let b = s.as_bytes();
    let mut quote = None;
    let mut j = from;
    while j < b.len() {
        match (quote, b[j]) {
            (None, b'"' | b'\'') => quote = Some(b[j]),
            (Some(q), c) if c == q => quote = None,
            (None, b'>') => return j + 1,
            _ => {}
        }
        j += 1;
    }
    s.len()
}

/// First `<name` followed by `>`, whitespace or `/`, case-insensitive; returns the index after its `>`.
fn find_tag_open(s: &str, name: &str, from: usize) -> Option<usize> {
    let needle = format!("<{name}");
    let mut at = from;
    while let Some(p) = find_ci(s, &needle, at) {
        let after = p + needle.len();
        match s.as_bytes().get(after) {
            Some(b'>' | b' ' | b'\t' | b'\n' | b'\r' | b'/') => {
                return Some(find_tag_end(s, after))
            }
            None => return None,
            _ => at = after,
        }
    }
    None
}

/// Case-insensitive (ASCII) search of `needle` in `s` from byte `from`.
fn find_ci(s: &str, needle: &str, from: usize) -> Option<usize> {
    let hay = s.as_bytes();
    let n = needle.as_bytes();
    if n.is_empty() || from >= hay.len() || hay.len() - from < n.len() {
        return None;
    }
    (from..=hay.len() - n.len()).find(|&p| hay[p..p + n.len()].eq_ignore_ascii_case(n))
}

/// Case-insensitive (ASCII) search of the last `needle` in `s`.
fn rfind_ci(s: &str, needle: &str) -> Option<usize> {
    let hay = s.as_bytes();
    let n = needle.as_bytes();
    if n.is_empty() || hay.len() < n.len() {
        return None;
    }
    (0..=hay.len() - n.len())
        .rev()
        .find(|&p| hay[p..p + n.len()].eq_ignore_ascii_case(n))
}

/// Accumulates text with browser-like whitespace handling.
#[derive(Default)]
struct TextSink {
    out: String,
    pre_depth: usize,
    /// A space is pending (collapsed whitespace outside `<pre>`).
    pending_space: bool,
}

impl TextSink {
    fn push_text(&mut self, raw: &str) {
        if raw.is_empty() {
            return;
        }
        let text = decode_entities(raw);
        if self.pre_depth > 0 {
            self.flush_space();
            self.out.push_str(&text);
            return;
        }
        for c in text.chars() {
            if c.is_whitespace() && c != '\u{a0}' {
                self.pending_space = true;
            } else {
                self.flush_space();
                self.out.push(if c == '\u{a0}' { ' ' } else { c });
            }
        }
    }

    fn flush_space(&mut self) {
        if self.pending_space {
            if !self.out.is_empty() && !self.out.ends_with(['\n', ' ']) {
                self.out.push(' ');
            }
            self.pending_space = false;
        }
    }

    fn line_break(&mut self) {
        self.pending_space = false;
        while self.out.ends_with(' ') {
            self.out.pop();
        }
        if !self.out.is_empty() && !self.out.ends_with('\n') {
            self.out.push('\n');
        }
    }

    fn finish(mut self) -> String {
        self.line_break();
        // Trailing spaces on lines and runs of blank lines left by nested blocks.
        let mut result = String::with_capacity(self.out.len());
        let mut blank_run = 0;
        for line in self.out.lines() {
            let line = line.trim_end();
            if line.is_empty() {
                blank_run += 1;
                if blank_run > 1 {
                    continue;
                }
            } else {
                blank_run = 0;
            }
            result.push_str(line);
            result.push('\n');
        }
        result.trim().to_string()
    }
}

/// Decodes HTML character references in `s`.
pub fn decode_entities(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('&') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find('&') {
        out.push_str(&rest[..p]);
        rest = &rest[p..];
        match decode_one(rest) {
            Some((decoded, len)) => {
                out.push_str(&decoded);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// Decodes the reference at the start of `s` (which starts with `&`): the text and the bytes consumed.
fn decode_one(s: &str) -> Option<(String, usize)> {
    let semi = s[1..].find(';').map(|p| p + 1)?;
    if semi > 40 {
        return None;
    }
    let body = &s[1..semi];
    if let Some(num) = body.strip_prefix('#') {
        let value = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse::<u32>().ok()?,
        };
        let c = char::from_u32(value)
            .filter(|&c| c != '\0')
            .unwrap_or('\u{fffd}');
        return Some((c.to_string(), semi + 1));
    }
    let c = named_entity(body)?;
    Some((c.to_string(), semi + 1))
}

/// The common named character references.
fn named_entity(name: &str) -> Option<&'static str> {
    Some(match name {
        "amp" | "AMP" => "&",
        "lt" | "LT" => "<",
        "gt" | "GT" => ">",
        "quot" | "QUOT" => "\"",
        "apos" => "'",
        "nbsp" => "\u{a0}",
        "copy" => "©",
        "reg" => "®",
        "trade" => "™",
        "hellip" => "…",
        "mdash" => "—",
        "ndash" => "–",
        "lsquo" => "‘",
        "rsquo" => "’",
        "sbquo" => "‚",
        "ldquo" => "“",
        "rdquo" => "”",
        "bdquo" => "„",
        "bull" => "•",
        "middot" => "·",
        "laquo" => "«",
        "raquo" => "»",
        "lsaquo" => "‹",
        "rsaquo" => "›",
        "times" => "×",
        "divide" => "÷",
        "deg" => "°",
        "plusmn" => "±",
        "para" => "¶",
        "sect" => "§",
        "euro" => "€",
        "pound" => "£",
        "yen" => "¥",
        "cent" => "¢",
        "larr" => "←",
        "rarr" => "→",
        "uarr" => "↑",
        "darr" => "↓",
        "harr" => "↔",
        "rArr" => "⇒",
        "lArr" => "⇐",
        "hArr" => "⇔",
        "le" => "≤",
        "ge" => "≥",
        "ne" => "≠",
        "asymp" => "≈",
        "equiv" => "≡",
        "infin" => "∞",
        "sum" => "∑",
        "prod" => "∏",
        "minus" => "−",
        "radic" => "√",
        "forall" => "∀",
        "exist" => "∃",
        "isin" => "∈",
        "notin" => "∉",
        "and" => "∧",
        "or" => "∨",
        "cap" => "∩",
        "cup" => "∪",
        "sub" => "⊂",
        "sup" => "⊃",
        "empty" => "∅",
        "nabla" => "∇",
        "part" => "∂",
        "int" => "∫",
        "alpha" => "α",
        "beta" => "β",
        "gamma" => "γ",
        "delta" => "δ",
        "epsilon" => "ε",
        "lambda" => "λ",
        "mu" => "μ",
        "pi" => "π",
        "sigma" => "σ",
        "theta" => "θ",
        "omega" => "ω",
        "Delta" => "Δ",
        "Sigma" => "Σ",
        "Omega" => "Ω",
        "shy" => "\u{ad}",
        "zwj" => "\u{200d}",
        "zwnj" => "\u{200c}",
        "ensp" => "\u{2002}",
        "emsp" => "\u{2003}",
        "thinsp" => "\u{2009}",
        "iexcl" => "¡",
        "iquest" => "¿",
        "acute" => "´",
        "grave" => "`",
        "circ" => "ˆ",
        "tilde" => "˜",
        "dagger" => "†",
        "Dagger" => "‡",
        "permil" => "‰",
        "prime" => "′",
        "Prime" => "″",
        "frac12" => "½",
        "frac14" => "¼",
        "frac34" => "¾",
        "sup2" => "²",
        "sup3" => "³",
        "eacute" => "é",
        "egrave" => "è",
        "aacute" => "á",
        "agrave" => "à",
        "ouml" => "ö",
        "uuml" => "ü",
        "auml" => "ä",
        "szlig" => "ß",
        "ccedil" => "ç",
        "ntilde" => "ñ",
        "Eacute" => "É",
        "Ouml" => "Ö",
        "Uuml" => "Ü",
        "Auml" => "Ä",
        "oslash" => "ø",
        "aring" => "å",
        "aelig" => "æ",
        "check" => "✓",
        "cross" => "✗",
        "star" => "☆",
        "starf" => "★",
        "hearts" => "♥",
        "verbar" | "vert" => "|",
        "lowbar" => "_",
        "ast" => "*",
        "num" => "#",
        "dollar" => "$",
        "percnt" => "%",
        "excl" => "!",
        "quest" => "?",
        "colon" => ":",
        "semi" => ";",
        "comma" => ",",
        "period" => ".",
        "sol" => "/",
        "bsol" => "\\",
        "lpar" => "(",
        "rpar" => ")",
        "lsqb" | "lbrack" => "[",
        "rsqb" | "rbrack" => "]",
        "lcub" | "lbrace" => "{",
        "rcub" | "rbrace" => "}",
        "equals" => "=",
        "plus" => "+",
        "Tab" => "\t",
        "NewLine" => "\n",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_tags_scripts_and_decodes_entities() {
        let html = "<html><head><title>T</title><style>p{color:red}</style></head><body>\
            <p>Fish &amp; chips &lt;3 &#8217;s &#x41;&nbsp;b</p><script>var x = '<p>no</p>';</script>\
            <ul><li>one</li><li>two</li></ul><!-- hidden --><p>a &unknown; b</p></body></html>";
        assert_eq!(
            html_to_text(html),
            "Fish & chips <3 ’s A b\none\ntwo\na &unknown; b"
        );
    }

    #[test]
    fn keeps_pre_whitespace_and_main_only() {
        let html = "<nav>menu</nav><div>side</div><main><h1>Title</h1><pre><code>fn main() {\n    let x = 1;\n}</code></pre>\
            <p>after   the\n  code</p></main><footer>foot</footer>";
        assert_eq!(
            html_to_text(html),
            "Title\nfn main() {\n    let x = 1;\n}\nafter the code"
        );
    }

    #[test]
    fn redirect_pages_are_empty_and_lone_angles_are_text() {
        let redirect = "<html><head><meta http-equiv=\"refresh\" content=\"0; URL=x.html\"></head>\
            <body><p>Redirecting to x</p></body></html>";
        assert_eq!(html_to_text(redirect), "");
        assert_eq!(html_to_text("<p>a < b and c > d</p>"), "a < b and c > d");
        assert_eq!(html_to_text("<p title=\"x > y\">quoted</p>"), "quoted");
        assert_eq!(
            html_to_text("&#0; &#xZZ; &#1114112;"),
            "\u{fffd} &#xZZ; \u{fffd}"
        );
    }
}
