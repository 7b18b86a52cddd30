//! `flagsync feeds show NAME`: what a feed expects of its file, read off
//! the configuration (no store needed), and `--sample`: a header and two
//! rows that import cleanly, to start a customer's export from.

use serde_json::{json, Value};

use super::output;
use crate::config::{Config, Feed, Field, FieldKind, Schedule};

/// The feed's mapping as JSON: the same facts as the text.
pub fn mapping_json(feed: &Feed) -> Value {
    let fields: Vec<Value> = feed
        .fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            json!({
                "name": f.name,
                "column": f.column,
                "aliases": f.aliases,
                "type": f.kind.as_str(),
                "required": f.required || i == feed.id_field,
                "separator": f.separator,
                "max_length": f.max_length,
                "group": feed.group_fields.contains(&i),
            })
        })
        .collect();
    let filters: Vec<Value> = feed
        .filters
        .iter()
        .map(|f| json!({"field": feed.fields[f.field].name, "equals": f.equals}))
        .collect();
    json!({
        "feed": feed.name,
        "id_field": feed.fields[feed.id_field].name,
        "delimiter": feed.delimiter.map_or("auto".to_string(), |d| delimiter_name(d).to_string()),
        "sheet": feed.sheet,
        "default_country": format!("{:?}", feed.default_country),
        "require_channel": feed.require_channel,
        "pgp_private_key_file": feed.pgp_private_key_file,
        "pgp_signer_key_file": feed.pgp_signer_key_file,
        "require_signature": feed.require_signature,
        "delete_threshold": feed.delete_threshold.to_string(),
        "clear_threshold": feed.clear_threshold.map_or("none".to_string(), |t| t.to_string()),
        "schedule": schedule_text(feed),
        "report_to": feed.report_to,
        "report_on": feed.report_on,
        "fields": fields,
        "groups": feed.group_fields.iter().map(|&i| feed.fields[i].name.clone()).collect::<Vec<_>>(),
        "filters": filters,
    })
}

fn delimiter_name(d: u8) -> &'static str {
    match d {
        b',' => ",",
        b';' => ";",
        b'\t' => "\\t",
        b'|' => "|",
        _ => "?",
    }
}

/// What the feed does with OpenPGP files, from its settings alone (the
/// key files are read by `flagsync check` and each run).
fn openpgp_line(feed: &Feed) -> Option<String> {
    let own = feed.pgp_private_key_file.as_ref()?;
    let mut line = format!(
        "  OpenPGP files are decrypted with {} (`--pgp-public-key` prints its public key)",
        crate::import::printable(&own.display().to_string())
    );
    if let Some(signer) = &feed.pgp_signer_key_file {
        line.push_str(&format!(
            "; signatures checked with {}{}",
            crate::import::printable(&signer.display().to_string()),
            if feed.require_signature {
                ", and required"
            } else {
                ""
            }
        ));
    }
    line.push('\n');
    Some(line)
}

fn schedule_text(feed: &Feed) -> String {
    match feed.schedule {
        Schedule::OnArrival => "on_arrival".into(),
        Schedule::Daily {
            hour,
            minute,
            second,
        } => format!("daily {hour:02}:{minute:02}:{second:02}"),
    }
}

/// The mapping in words, one field per line under column headers.
pub fn mapping_text(config: &Config, feed: &Feed) -> String {
    let mut out = format!(
        "feed {} ({})\n  ID field: {}; delimiter: {}; phones read as {:?} numbers\n",
        feed.name,
        config.source,
        feed.fields[feed.id_field].name,
        feed.delimiter.map_or("auto", delimiter_name),
        feed.default_country,
    );
    out.push_str(&format!(
        "  held when a file would remove more than {} or clear more than {} of a channel\n",
        feed.delete_threshold,
        feed.clear_threshold
            .map_or("(never)".to_string(), |t| t.to_string())
    ));
    if let Some(sheet) = &feed.sheet {
        out.push_str(&format!(
            "  a workbook's sheet read: '{}'\n",
            crate::import::printable(sheet)
        ));
    }
    out.push_str(&format!("  schedule: {}\n", schedule_text(feed)));
    if feed.require_channel {
        out.push_str("  each row needs a valid SMS, voice or email value\n");
    }
    if let Some(line) = openpgp_line(feed) {
        out.push_str(&line);
    }
    out.push_str("\n  FIELD                TYPE   REQUIRED  COLUMN (and aliases)\n");
    for (i, f) in feed.fields.iter().enumerate() {
        let required = if f.required || i == feed.id_field {
            "yes"
        } else {
            "no"
        };
        let mut column = format!("\"{}\"", f.column);
        for alias in &f.aliases {
            column.push_str(&format!(", \"{alias}\""));
        }
        if let Some(sep) = &f.separator {
            column.push_str(&format!(" (values separated by \"{sep}\")"));
        }
        out.push_str(&format!(
            "  {:<20} {:<6} {:<9} {column}\n",
            f.name,
            f.kind.as_str(),
            required
        ));
    }
    let groups: Vec<&str> = feed
        .group_fields
        .iter()
        .map(|&i| feed.fields[i].name.as_str())
        .collect();
    out.push_str(&format!(
        "\n  groups from: {}\n",
        if groups.is_empty() {
            "(none)".to_string()
        } else {
            groups.join(", ")
        }
    ));
    for f in &feed.filters {
        out.push_str(&format!(
            "  imports only rows where {} is one of: {}\n",
            feed.fields[f.field].name,
            f.equals.join(", ")
        ));
    }
    out.push_str(&format!(
        "\n  a file that imports cleanly: `flagsync feeds show {} --sample > sample.csv`\n",
        feed.name
    ));
    out
}

/// A header of the feed's columns and two rows that pass every rule:
/// phones are libphonenumber's examples for the feed's country, filtered
/// fields hold an accepted value.
pub fn sample_csv(feed: &Feed) -> anyhow::Result<Vec<u8>> {
    let delimiter = feed.delimiter.unwrap_or(b',');
    let mut w = csv::WriterBuilder::new()
        .delimiter(delimiter)
        .from_writer(Vec::new());
    w.write_record(feed.fields.iter().map(|f| f.column.as_str()))?;
    for row in 0..2 {
        let cells: Vec<String> = feed
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| sample_value(feed, i, f, row))
            .collect();
        w.write_record(&cells)?;
    }
    Ok(w.into_inner()?)
}

fn sample_value(feed: &Feed, index: usize, field: &Field, row: usize) -> String {
    if let Some(filter) = feed.filters.iter().find(|f| f.field == index) {
        if let Some(accepted) = filter.equals.first() {
            return accepted.clone();
        }
    }
    let value = match field.kind {
        FieldKind::Id => format!("E{:05}", row + 1),
        FieldKind::Email => ["ann.example@example.com", "ben.sample@example.com"][row].into(),
        FieldKind::Sms => {
            crate::import::phone::example_number(feed.default_country, true).unwrap_or_default()
        }
        FieldKind::Voice => {
            crate::import::phone::example_number(feed.default_country, false).unwrap_or_default()
        }
        FieldKind::Multi => {
            let sep = field.separator.as_deref().unwrap_or(";");
            ["Alpha", "Beta"].join(sep)
        }
        FieldKind::Text => text_sample(&field.name, row),
    };
    value.chars().take(field.max_length).collect()
}

fn text_sample(name: &str, row: usize) -> String {
    let name = name.to_ascii_lowercase();
    let pick = |a: &str, b: &str| {
        if row == 0 {
            a.to_string()
        } else {
            b.to_string()
        }
    };
    if name.contains("first") || name.contains("given") {
        pick("Ann", "Ben")
    } else if name.contains("last") || name.contains("family") || name.contains("surname") {
        pick("Example", "Sample")
    } else if name.contains("department") {
        pick("Sales", "Support")
    } else if name.contains("location") || name.contains("site") || name.contains("city") {
        pick("New York", "Boston")
    } else if name.contains("status") {
        "Active".into()
    } else {
        format!("{name} {}", row + 1)
    }
}

pub fn show(
    config: &Config,
    feed: &Feed,
    json: bool,
    sample: bool,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    if sample {
        out.write_all(&sample_csv(feed)?)?;
        return Ok(());
    }
    if json {
        return output::print_value(out, &mapping_json(feed));
    }
    out.write_all(mapping_text(config, feed).as_bytes())?;
    Ok(())
}
