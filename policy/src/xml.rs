//! The OSS XML codec for `<HttpsConfiguration>`: no namespace, lowercase booleans,
//! order-preserving de-duplication of lists.
//!
//! Decisions where the schema is silent:
//! * Booleans are exactly `true` or `false`: `True`, `1` and the like are refused. Every OSS
//!   SDK sends lowercase, and a strict reading keeps us from storing a document that OSS
//!   itself might read differently.
//! * Unknown elements are skipped with everything inside them (forward compatibility), but
//!   still count towards [`MAX_DEPTH`]. Attributes are ignored (so an `xmlns` on the root is
//!   tolerated), yet must be well-formed.
//! * Text values are trimmed of XML whitespace; predefined entities, character references
//!   and CDATA sections are decoded. A DTD is refused: nothing here needs one, and entity
//!   definitions are a classic parser attack surface.

use std::fmt::Write as _;

use quick_xml::{
    escape::{escape, resolve_xml_entity},
    events::{BytesRef, BytesStart, Event},
    Reader,
};

use crate::{
    config::{MAX_SUITES_PER_LIST, MAX_TLS_VERSIONS},
    CipherSuiteConfig, HttpsConfig, TlsConfig, TlsVersion,
};

/// Why a body is not a valid `<HttpsConfiguration>` (`400 MalformedXML`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct XmlError(pub String);

/// Maximum element nesting accepted before the parser gives up.
pub const MAX_DEPTH: usize = 8;
/// The most text one element may hold (blanks around a value included).
pub const MAX_LEAF_TEXT: usize = 8 * 1024;

/// Parses a PUT body. Structure errors (not XML, wrong root, missing `<TLS>`/`<Enable>`,
/// non-boolean, unknown version string, too deep) are `XmlError`. Semantic checks
/// (`Enable=true` without versions, cipher names) are [`HttpsConfig::effective`]'s job.
///
/// The result is in stored form ([`HttpsConfig::normalize`]).
pub fn parse(body: &[u8]) -> Result<HttpsConfig, XmlError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| XmlError(format!("the body is not UTF-8 text: {e}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_matches(is_xml_whitespace).is_empty() {
        return Err(XmlError(
            "the body is empty: expected an <HttpsConfiguration> document".into(),
        ));
    }
    let mut reader = Reader::from_str(text);
    let mut doc = Document::default();
    let mut first = true;
    loop {
        let event = reader.read_event().map_err(|e| {
            XmlError(format!(
                "not well-formed XML (at byte {}): {e}",
                reader.error_position()
            ))
        })?;
        match event {
            Event::Start(e) => doc.start(&e)?,
            Event::Empty(e) => {
                doc.start(&e)?;
                doc.end()?;
            }
            Event::End(_) => doc.end()?,
            Event::Text(t) => doc.text(&t.xml10_content())?,
            Event::CData(t) => doc.text(&t.xml10_content())?,
            Event::GeneralRef(r) => doc.text(&resolve_reference(&r)?)?,
            Event::Decl(_) if first => {}
            Event::Decl(_) => {
                return Err(XmlError(
                    "an XML declaration may only begin the document".into(),
                ))
            }
            Event::DocType(_) => {
                return Err(XmlError(
                    "a document type declaration is not accepted".into(),
                ))
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
        first = false;
    }
    doc.finish()
}

/// Prints a GET body (with the `<?xml …?>` declaration). Always includes `<TLS><Enable>`.
///
/// Prints the stored form: no versions while management is disabled, whatever `config` holds.
pub fn print(config: &HttpsConfig) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<HttpsConfiguration>");
    out.push_str("<TLS>");
    element(&mut out, "Enable", bool_str(config.tls.enable));
    if config.tls.enable {
        for v in &config.tls.tls_versions {
            element(&mut out, "TLSVersion", v.as_str());
        }
    }
    out.push_str("</TLS>");
    if let Some(cs) = &config.cipher_suite {
        out.push_str("<CipherSuite>");
        if let Some(enable) = cs.enable {
            element(&mut out, "Enable", bool_str(enable));
        }
        if let Some(strong) = cs.strong_cipher_suite {
            element(&mut out, "StrongCipherSuite", bool_str(strong));
        }
        for name in &cs.custom_cipher_suites {
            element(&mut out, "CustomCipherSuite", name);
        }
        for name in &cs.tls13_custom_cipher_suites {
            element(&mut out, "TLS13CustomCipherSuite", name);
        }
        out.push_str("</CipherSuite>");
    }
    out.push_str("</HttpsConfiguration>");
    out
}

/// The OSS error document, as both the control plane's REST API and the agent answer:
/// `<Error><Code/><Message/><RequestId/><HostId/>[<BucketName/>]</Error>`, every value
/// escaped (characters XML 1.0 cannot carry become U+FFFD).
pub fn error_document(
    code: &str,
    message: &str,
    request_id: &str,
    host_id: &str,
    bucket: Option<&str>,
) -> String {
    let mut xml = String::with_capacity(256 + message.len());
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>");
    for (tag, value) in [
        ("Code", Some(code)),
        ("Message", Some(message)),
        ("RequestId", Some(request_id)),
        ("HostId", Some(host_id)),
        ("BucketName", bucket),
    ] {
        if let Some(value) = value {
            let _ = write!(xml, "<{tag}>{}</{tag}>", escape_text(value));
        }
    }
    xml.push_str("</Error>\n");
    xml
}

/// XML text escaping for documents we write; characters XML 1.0 cannot carry become U+FFFD.
fn escape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn element(out: &mut String, name: &str, text: &str) {
    // Writing to a String cannot fail.
    let _ = write!(out, "<{name}>{}</{name}>", escape(text));
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// An open element, by what it means here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    Root,
    Tls,
    CipherSuite,
    Leaf(Leaf),
    /// Not in the schema: skipped with its content.
    Unknown,
}

/// An element that holds only text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leaf {
    TlsEnable,
    TlsVersion,
    CipherEnable,
    Strong,
    Custom,
    Custom13,
}

impl Leaf {
    fn name(self) -> &'static str {
        match self {
            Self::TlsEnable | Self::CipherEnable => "Enable",
            Self::TlsVersion => "TLSVersion",
            Self::Strong => "StrongCipherSuite",
            Self::Custom => "CustomCipherSuite",
            Self::Custom13 => "TLS13CustomCipherSuite",
        }
    }

    fn parent(self) -> &'static str {
        match self {
            Self::TlsEnable | Self::TlsVersion => "TLS",
            _ => "CipherSuite",
        }
    }
}

impl Frame {
    fn name(self) -> &'static str {
        match self {
            Self::Root => "HttpsConfiguration",
            Self::Tls => "TLS",
            Self::CipherSuite => "CipherSuite",
            Self::Leaf(leaf) => leaf.name(),
            Self::Unknown => "an unknown element",
        }
    }
}

/// The document being read: the open elements and what was found so far.
#[derive(Default)]
struct Document {
    stack: Vec<Frame>,
    root_closed: bool,
    /// Text of the open leaf.
    text: String,
    tls: Option<(Option<bool>, Vec<TlsVersion>)>,
    cipher_suite: Option<CipherSuiteConfig>,
}

impl Document {
    fn start(&mut self, e: &BytesStart<'_>) -> Result<(), XmlError> {
        for attribute in e.attributes() {
            attribute.map_err(|err| XmlError(format!("not well-formed XML: {err}")))?;
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(XmlError(format!(
                "elements are nested deeper than {MAX_DEPTH} levels"
            )));
        }
        let name = e.name();
        let name = name.as_ref();
        let frame = match self.stack.last() {
            None if self.root_closed => {
                return Err(XmlError("content after the root element".into()));
            }
            None if name == "HttpsConfiguration" => Frame::Root,
            None => {
                return Err(XmlError(format!(
                    "the root element is <{}>, expected <HttpsConfiguration>",
                    shown(name)
                )));
            }
            Some(Frame::Root) => match name {
                "TLS" if self.tls.is_some() => return Err(duplicate("TLS", "HttpsConfiguration")),
                "TLS" => {
                    self.tls = Some((None, Vec::new()));
                    Frame::Tls
                }
                "CipherSuite" if self.cipher_suite.is_some() => {
                    return Err(duplicate("CipherSuite", "HttpsConfiguration"))
                }
                "CipherSuite" => {
                    self.cipher_suite = Some(CipherSuiteConfig::default());
                    Frame::CipherSuite
                }
                _ => Frame::Unknown,
            },
            Some(Frame::Tls) => match name {
                "Enable" => Frame::Leaf(Leaf::TlsEnable),
                "TLSVersion" => Frame::Leaf(Leaf::TlsVersion),
                _ => Frame::Unknown,
            },
            Some(Frame::CipherSuite) => match name {
                "Enable" => Frame::Leaf(Leaf::CipherEnable),
                "StrongCipherSuite" => Frame::Leaf(Leaf::Strong),
                "CustomCipherSuite" => Frame::Leaf(Leaf::Custom),
                "TLS13CustomCipherSuite" => Frame::Leaf(Leaf::Custom13),
                _ => Frame::Unknown,
            },
            Some(Frame::Leaf(leaf)) => {
                return Err(XmlError(format!(
                    "<{}> holds text only, found the element <{}> in it",
                    leaf.name(),
                    shown(name)
                )));
            }
            Some(Frame::Unknown) => Frame::Unknown,
        };
        self.text.clear();
        self.stack.push(frame);
        Ok(())
    }

    fn text(&mut self, text: &str) -> Result<(), XmlError> {
        match self.stack.last() {
            Some(Frame::Leaf(leaf)) => {
                if self.text.len() + text.len() > MAX_LEAF_TEXT {
                    return Err(XmlError(format!(
                        "<{}> holds more than {MAX_LEAF_TEXT} bytes of text",
                        leaf.name()
                    )));
                }
                self.text.push_str(text);
            }
            Some(Frame::Unknown) => {}
            _ if text.trim_matches(is_xml_whitespace).is_empty() => {}
            Some(frame) => {
                return Err(XmlError(format!(
                    "unexpected text {} in <{}>",
                    shown(text.trim_matches(is_xml_whitespace)),
                    frame.name()
                )));
            }
            None => {
                return Err(XmlError(format!(
                    "unexpected text {} outside the root element",
                    shown(text.trim_matches(is_xml_whitespace))
                )));
            }
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), XmlError> {
        // quick-xml refuses unmatched end tags, so there is always an open element here.
        let Some(frame) = self.stack.pop() else {
            return Err(XmlError("an end tag without a start tag".into()));
        };
        match frame {
            Frame::Root => self.root_closed = true,
            Frame::Tls => {
                if matches!(self.tls, Some((None, _))) {
                    return Err(XmlError("<TLS> has no <Enable>".into()));
                }
            }
            Frame::Leaf(leaf) => {
                let text = std::mem::take(&mut self.text);
                self.leaf(leaf, text.trim_matches(is_xml_whitespace))?;
            }
            Frame::CipherSuite | Frame::Unknown => {}
        }
        Ok(())
    }

    fn leaf(&mut self, leaf: Leaf, value: &str) -> Result<(), XmlError> {
        match leaf {
            Leaf::TlsEnable | Leaf::TlsVersion => {
                // The leaf was opened inside <TLS>, which set `tls`.
                let Some((enable, versions)) = &mut self.tls else {
                    return Err(XmlError("<TLS> content outside <TLS>".into()));
                };
                if leaf == Leaf::TlsEnable {
                    set_once(enable, parse_bool(leaf, value)?, leaf)?;
                } else {
                    if versions.len() >= MAX_TLS_VERSIONS {
                        return Err(XmlError(format!(
                            "more than {MAX_TLS_VERSIONS} <TLSVersion> elements"
                        )));
                    }
                    let v = value
                        .parse()
                        .map_err(|e| XmlError(format!("<TLSVersion>: {e}")))?;
                    versions.push(v);
                }
            }
            _ => {
                let Some(cs) = &mut self.cipher_suite else {
                    return Err(XmlError(
                        "<CipherSuite> content outside <CipherSuite>".into(),
                    ));
                };
                match leaf {
                    Leaf::CipherEnable => set_once(&mut cs.enable, parse_bool(leaf, value)?, leaf)?,
                    Leaf::Strong => {
                        set_once(&mut cs.strong_cipher_suite, parse_bool(leaf, value)?, leaf)?
                    }
                    _ => {
                        let list = if leaf == Leaf::Custom {
                            &mut cs.custom_cipher_suites
                        } else {
                            &mut cs.tls13_custom_cipher_suites
                        };
                        if list.len() >= MAX_SUITES_PER_LIST {
                            return Err(XmlError(format!(
                                "more than {MAX_SUITES_PER_LIST} <{}> elements",
                                leaf.name()
                            )));
                        }
                        list.push(value.to_owned());
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<HttpsConfig, XmlError> {
        if let Some(open) = self.stack.last() {
            return Err(XmlError(format!("the body ends inside <{}>", open.name())));
        }
        if !self.root_closed {
            return Err(XmlError("no <HttpsConfiguration> element".into()));
        }
        let Some((Some(enable), tls_versions)) = self.tls else {
            return Err(XmlError("<HttpsConfiguration> has no <TLS>".into()));
        };
        let mut config = HttpsConfig {
            tls: TlsConfig {
                enable,
                tls_versions,
            },
            cipher_suite: self.cipher_suite,
        };
        config.normalize();
        Ok(config)
    }
}

fn set_once(slot: &mut Option<bool>, value: bool, leaf: Leaf) -> Result<(), XmlError> {
    if slot.is_some() {
        return Err(duplicate(leaf.name(), leaf.parent()));
    }
    *slot = Some(value);
    Ok(())
}

fn parse_bool(leaf: Leaf, value: &str) -> Result<bool, XmlError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(XmlError(format!(
            "<{}> in <{}> must be true or false, not {}",
            leaf.name(),
            leaf.parent(),
            shown(value)
        ))),
    }
}

fn duplicate(name: &str, parent: &str) -> XmlError {
    XmlError(format!("<{parent}> has more than one <{name}>"))
}

fn resolve_reference(r: &BytesRef<'_>) -> Result<String, XmlError> {
    let unknown = || XmlError(format!("unknown entity reference &{};", shown(r)));
    if r.is_char_ref() {
        return match r.resolve_char_ref() {
            Ok(Some(c)) => Ok(c.to_string()),
            _ => Err(unknown()),
        };
    }
    resolve_xml_entity(r).map(str::to_owned).ok_or_else(unknown)
}

fn is_xml_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// A peer-supplied string for a message: quoted, escaped, and bounded.
fn shown(s: &str) -> String {
    const MAX_CHARS: usize = 64;
    let head: String = s.chars().take(MAX_CHARS).collect();
    if head.len() < s.len() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
}

#[cfg(test)]
mod tests;
