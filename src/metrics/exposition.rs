//! The two text formats `/metrics` answers in, chosen by the scraper's `Accept` header.
//!
//! prometheus-client encodes OpenMetrics 1.0 only. Served to a reader of the older
//! Prometheus text format 0.0.4 (`promtool check metrics`, curl piped into a text parser,
//! many agents) it does not parse: a counter family is `# TYPE x counter` with samples
//! `x_total`, which that format reads as samples of an undeclared family, and `# EOF` is not
//! a comment it knows. So `/metrics` answers OpenMetrics only when the `Accept` header asks
//! for it (as Prometheus' own scrapes do), and otherwise converts it to 0.0.4
//! ([`to_text`]): the family name of a counter becomes the `_total` sample name, an info
//! family becomes a gauge named `<x>_info`, `# UNIT`, `# EOF`, `_created` samples, sample
//! timestamps and exemplars are dropped.

/// `Content-Type` of the Prometheus text format 0.0.4 (the default).
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of OpenMetrics 1.0.0 (only when asked for).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which format an `Accept` header prefers, of the two served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    OpenMetrics,
}

/// The format to answer `accept` with: OpenMetrics when the header rates
/// `application/openmetrics-text` (version 1.0.0 or none) above every media range that the
/// text format matches (`text/plain` of version 0.0.4 or none, `text/*`, `*/*`); on a tie,
/// without the header, or with a header that cannot be read, the text format.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else { return Format::Text };
    let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
    for range in accept.split(',') {
        let Ok(m) = range.trim().parse::<mime::Mime>() else { continue };
        let q = m
            .get_param("q")
            .map_or(Some(1.0), |q| q.as_str().parse::<f32>().ok())
            .filter(|q| (0.0..=1.0).contains(q))
            .unwrap_or(0.0);
        let version = m.get_param("version").map(|v| v.as_str().to_string());
        let (ty, sub) = (m.type_().as_str(), m.subtype().as_str());
        if ty == "application" && sub == "openmetrics-text" && version.as_deref().is_none_or(|v| v == "1.0.0")
        {
            openmetrics = openmetrics.max(q);
        } else if (ty == "text" && sub == "plain" && version.as_deref().is_none_or(|v| v == "0.0.4"))
            || (ty == "text" && sub == "*")
            || (ty == "*" && sub == "*")
        {
            text = text.max(q);
        }
    }
    if openmetrics > 0.0 && openmetrics > text { Format::OpenMetrics } else { Format::Text }
}

/// What a family's samples are called in the text format, and its `# TYPE` there.
struct Family<'a> {
    /// The OpenMetrics family name.
    name: &'a str,
    kind: &'a str,
}

impl Family<'_> {
    /// The text format's family name and type (`None`: the format has no such type; its
    /// samples are written untyped, without `# HELP` or `# TYPE`).
    fn text(&self) -> Option<(String, &'static str)> {
        let n = self.name;
        match self.kind {
            "counter" => Some((format!("{n}_total"), "counter")),
            "gauge" => Some((n.to_string(), "gauge")),
            "histogram" => Some((n.to_string(), "histogram")),
            "summary" => Some((n.to_string(), "summary")),
            "info" => Some((format!("{n}_info"), "gauge")),
            "stateset" => Some((n.to_string(), "gauge")),
            "unknown" => Some((n.to_string(), "untyped")),
            _ => None,
        }
    }

    /// Samples the text format has no place for.
    fn drops(&self, sample: &str) -> bool {
        matches!(self.kind, "counter" | "histogram" | "summary")
            && sample.strip_prefix(self.name).is_some_and(|s| s == "_created")
    }
}

/// OpenMetrics text (as prometheus-client writes it: per family `# HELP`, `# TYPE`,
/// `# UNIT`, then its samples; `# EOF` last) → Prometheus text format 0.0.4.
pub fn to_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut family: Option<Family<'_>> = None;
    // `# HELP` comes before `# TYPE`, which decides the name it is written under.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            let (keyword, name, rest) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
            match (keyword, name) {
                (Some("HELP"), Some(name)) => help = Some((name, rest)),
                (Some("TYPE"), Some(name)) => {
                    let f = Family { name, kind: rest.trim() };
                    if let Some((text_name, kind)) = f.text() {
                        if let Some((_, h)) = help.filter(|(n, _)| *n == name) {
                            // OpenMetrics also escapes '"' in help text; 0.0.4 only '\' and newline.
                            out.push_str(&format!("# HELP {text_name} {}\n", h.replace("\\\"", "\"")));
                        }
                        out.push_str(&format!("# TYPE {text_name} {kind}\n"));
                    }
                    help = None;
                    family = Some(f);
                }
                // `# UNIT`, `# EOF` and anything else: no such line in 0.0.4.
                _ => {}
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let (series, value) = split_sample(line);
        let name = &series[..series.find('{').unwrap_or(series.len())];
        if family.as_ref().is_some_and(|f| f.drops(name)) {
            continue;
        }
        out.push_str(series);
        out.push(' ');
        out.push_str(value);
        out.push('\n');
    }
    out
}

/// A sample line → (name with its labels, value): the timestamp (seconds in OpenMetrics,
/// milliseconds in 0.0.4) and the exemplar (` # {...} v`) are left out. Label values may hold
/// spaces, `#`, `}` and escaped quotes: the label set ends at the first `}` outside quotes.
fn split_sample(line: &str) -> (&str, &str) {
    let bytes = line.as_bytes();
    let mut end = line.find([' ', '{']).unwrap_or(line.len());
    if bytes.get(end) == Some(&b'{') {
        let (mut quoted, mut escaped) = (false, false);
        let mut i = end + 1;
        while i < bytes.len() {
            match bytes[i] {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b'}' if !quoted => break,
                _ => {}
            }
            i += 1;
        }
        end = (i + 1).min(line.len());
    }
    let value = line[end..].split_whitespace().next().unwrap_or("");
    (&line[..end], value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_header_chooses_the_format() {
        assert_eq!(negotiate(None), Format::Text);
        assert_eq!(negotiate(Some("*/*")), Format::Text);
        assert_eq!(negotiate(Some("text/plain")), Format::Text);
        assert_eq!(negotiate(Some("application/openmetrics-text")), Format::OpenMetrics);
        assert_eq!(negotiate(Some("application/openmetrics-text; version=1.0.0")), Format::OpenMetrics);
        assert_eq!(negotiate(Some("application/openmetrics-text; version=0.0.1")), Format::Text);
        // Prometheus 2.x and 3.x scrapes.
        let p2 = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                  text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(p2)), Format::OpenMetrics);
        let p3 = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
                  application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,\
                  text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(negotiate(Some(p3)), Format::OpenMetrics);
        // Text rated higher, OpenMetrics refused, a tie, garbage.
        assert_eq!(negotiate(Some("application/openmetrics-text;q=0.2,text/plain;q=0.9")), Format::Text);
        assert_eq!(negotiate(Some("application/openmetrics-text;q=0")), Format::Text);
        assert_eq!(negotiate(Some("application/openmetrics-text,*/*")), Format::Text);
        assert_eq!(negotiate(Some("no such thing;;;")), Format::Text);
    }

    #[test]
    fn openmetrics_becomes_text_0_0_4() {
        let om = "# HELP a_connections Connections accepted per plane.\n\
                  # TYPE a_connections counter\n\
                  a_connections_total{plane=\"rest\"} 3\n\
                  a_connections_created{plane=\"rest\"} 1700000000.0\n\
                  # HELP a_up Up \\\"quoted\\\".\n\
                  # TYPE a_up gauge\n\
                  a_up 1 1700000000.5\n\
                  # HELP a_build Build.\n\
                  # TYPE a_build info\n\
                  a_build_info{version=\"1 } # {x}\",commit=\"a\\\"b\"} 1\n\
                  # HELP a_latency_seconds Latency.\n\
                  # TYPE a_latency_seconds histogram\n\
                  # UNIT a_latency_seconds seconds\n\
                  a_latency_seconds_sum 0.5\n\
                  a_latency_seconds_count 2\n\
                  a_latency_seconds_bucket{le=\"0.1\"} 1 # {trace_id=\"x\"} 0.05\n\
                  a_latency_seconds_bucket{le=\"+Inf\"} 2\n\
                  # EOF\n";
        let want = "# HELP a_connections_total Connections accepted per plane.\n\
                    # TYPE a_connections_total counter\n\
                    a_connections_total{plane=\"rest\"} 3\n\
                    # HELP a_up Up \"quoted\".\n\
                    # TYPE a_up gauge\n\
                    a_up 1\n\
                    # HELP a_build_info Build.\n\
                    # TYPE a_build_info gauge\n\
                    a_build_info{version=\"1 } # {x}\",commit=\"a\\\"b\"} 1\n\
                    # HELP a_latency_seconds Latency.\n\
                    # TYPE a_latency_seconds histogram\n\
                    a_latency_seconds_sum 0.5\n\
                    a_latency_seconds_count 2\n\
                    a_latency_seconds_bucket{le=\"0.1\"} 1\n\
                    a_latency_seconds_bucket{le=\"+Inf\"} 2\n";
        assert_eq!(to_text(om), want);
    }
}
