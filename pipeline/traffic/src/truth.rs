//! The ground truth: which account belongs to which population or campaign.
//!
//! CSV with a header, one row per account, columns by name (extra columns are
//! ignored, so a provider can keep its own):
//!
//! | column | meaning |
//! | --- | --- |
//! | `account_id` | the account, as in the events' `account_id` |
//! | `label` | `benign` or `campaign` |
//! | `style` | attack style for campaign accounts (e.g. `hydra_proxy`), population for benign ones (e.g. `chat_user`) |
//! | `campaign_id` | which campaign a campaign account belongs to; empty for benign accounts |
//! | `first_request_ms` | optional: event time (epoch ms) of the account's first request, the start of its time to detect |
//!
//! `distill-watch gen`, `demo` and `eval` write it; `eval --truth` reads it.

use std::io::Write as _;
use std::path::Path;

/// Who an account is, in truth.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    /// Attack style (campaign accounts) or population (benign accounts).
    pub group: String,
    /// Campaign id for campaign accounts, `None` for benign ones.
    pub campaign: Option<String>,
}

impl Label {
    pub fn benign(population: &str) -> Label {
        Label {
            group: population.to_string(),
            campaign: None,
        }
    }

    pub fn campaign(style: &str, campaign_id: &str) -> Label {
        Label {
            group: style.to_string(),
            campaign: Some(campaign_id.to_string()),
        }
    }

    pub fn is_campaign(&self) -> bool {
        self.campaign.is_some()
    }
}

/// One account of the ground truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruthRow {
    pub account_id: String,
    pub label: Label,
    /// Event time of the account's first request, when known.
    pub first_request_ms: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum TruthError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
}

pub const HEADER: &str = "account_id,label,style,campaign_id,first_request_ms";

/// Write `rows` as CSV.
pub fn write_csv(rows: &[TruthRow], path: &Path) -> Result<(), TruthError> {
    let io = |source| TruthError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    let mut write = || -> std::io::Result<()> {
        writeln!(out, "{HEADER}")?;
        for r in rows {
            writeln!(
                out,
                "{},{},{},{},{}",
                field(&r.account_id),
                if r.label.is_campaign() {
                    "campaign"
                } else {
                    "benign"
                },
                field(&r.label.group),
                field(r.label.campaign.as_deref().unwrap_or("")),
                r.first_request_ms
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            )?;
        }
        out.flush()
    };
    write().map_err(io)
}

/// Quote a field when CSV needs it.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Split one CSV line into fields (RFC 4180 quoting, no embedded newlines).
fn split(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (false, '"') if cur.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut cur)),
            (_, c) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    fields.push(cur);
    Ok(fields)
}

/// Read a ground-truth CSV. Every problem names its line.
pub fn read_csv(path: &Path) -> Result<Vec<TruthRow>, TruthError> {
    let text = std::fs::read_to_string(path).map_err(|source| TruthError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_csv(&text, &path.display().to_string())
}

pub fn parse_csv(text: &str, origin: &str) -> Result<Vec<TruthRow>, TruthError> {
    let invalid = |line: usize, message: String| TruthError::Invalid {
        path: origin.to_string(),
        line,
        message,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty());
    let (hline, header) = lines
        .next()
        .ok_or_else(|| invalid(1, format!("empty file; expected the header {HEADER}")))?;
    let names: Vec<String> = split(header)
        .map_err(|m| invalid(hline, m))?
        .into_iter()
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    let col = |name: &str| names.iter().position(|n| n == name);
    let need = |name: &str| {
        col(name).ok_or_else(|| {
            invalid(
                hline,
                format!("header lacks the column {name:?}; expected {HEADER}"),
            )
        })
    };
    let (c_account, c_label, c_style) = (need("account_id")?, need("label")?, need("style")?);
    let c_campaign = need("campaign_id")?;
    let c_first = col("first_request_ms");
    let mut rows = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (n, line) in lines {
        let f = split(line).map_err(|m| invalid(n, m))?;
        let get = |i: usize| f.get(i).map(|s| s.trim()).unwrap_or("");
        let account_id = get(c_account).to_string();
        if account_id.is_empty() {
            return Err(invalid(n, "account_id is empty".into()));
        }
        if !seen.insert(account_id.clone()) {
            return Err(invalid(n, format!("account {account_id} is listed twice")));
        }
        let style = get(c_style);
        if style.is_empty() {
            return Err(invalid(
                n,
                "style (attack style or population) is empty".into(),
            ));
        }
        let campaign = get(c_campaign);
        let label = match get(c_label).to_ascii_lowercase().as_str() {
            "benign" => {
                if !campaign.is_empty() {
                    return Err(invalid(
                        n,
                        format!("benign account {account_id} has a campaign_id ({campaign})"),
                    ));
                }
                Label::benign(style)
            }
            "campaign" => Label::campaign(
                style,
                // A campaign account without an id is its own campaign's
                // only known member: group it by style.
                if campaign.is_empty() { style } else { campaign },
            ),
            other => {
                return Err(invalid(
                    n,
                    format!("label {other:?}: expected benign or campaign"),
                ))
            }
        };
        let first_request_ms = match c_first.map(get).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(s.parse::<i64>().map_err(|_| {
                invalid(
                    n,
                    format!("first_request_ms {s:?} is not epoch milliseconds"),
                )
            })?),
        };
        rows.push(TruthRow {
            account_id,
            label,
            first_request_ms,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_bad_lines() {
        let rows = vec![
            TruthRow {
                account_id: "a1".into(),
                label: Label::campaign("hydra_proxy", "proxy-1"),
                first_request_ms: Some(1_000),
            },
            TruthRow {
                account_id: "b,2".into(),
                label: Label::benign("chat_user"),
                first_request_ms: None,
            },
        ];
        let dir = std::env::temp_dir().join(format!("dw-truth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("truth.csv");
        write_csv(&rows, &path).unwrap();
        assert_eq!(read_csv(&path).unwrap(), rows);

        let bad = "account_id,label,style,campaign_id\nx,campaign,cot,c1\nx,benign,chat,\n";
        let e = parse_csv(bad, "t.csv").unwrap_err().to_string();
        assert!(e.starts_with("t.csv:3:"), "{e}");
        let e = parse_csv("account_id,label\n", "t.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("style"), "{e}");
        let e = parse_csv("account_id,label,style,campaign_id\ny,evil,s,\n", "t.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("evil"), "{e}");
        // Extra columns are kept out of the way; a missing first_request_ms is fine.
        let ok = parse_csv(
            "note,account_id,label,style,campaign_id\nhi,z,campaign,logit_loud,\n",
            "t.csv",
        )
        .unwrap();
        assert_eq!(ok[0].label, Label::campaign("logit_loud", "logit_loud"));
    }
}
