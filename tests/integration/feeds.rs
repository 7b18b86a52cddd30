//! `flagsync feeds show`: a feed's mapping in words and JSON, and a sample
//! file that imports cleanly under every kind of feed.

use crate::util::*;

/// `feeds show NAME --sample`, imported into the same feed.
fn sample_imports_cleanly(env: &Env, feed: &str) -> Run {
    let sample = env.run(&["feeds", "show", feed, "--sample"]);
    assert_eq!(sample.code, 0, "{sample:#?}");
    assert_eq!(
        sample.stdout.lines().count(),
        3,
        "a header and two rows: {sample:#?}"
    );
    let run = env.import_text(feed, "sample.csv", &sample.stdout);
    assert_eq!(run.state(), "applied", "{:#}", run.json);
    run.assert_counts(&[
        ("added", 2),
        ("flagged", 0),
        ("warnings", 0),
        ("filtered", 0),
    ]);
    run
}

#[test]
fn the_sample_of_each_feed_imports_with_nothing_flagged() {
    let uk = Feed::hr("uk")
        .delimiter(";")
        .field(Field::new("tags", "Tags", "multi").separator("|"))
        .filter("status", &["Active", "On leave"]);
    let env = Env::new(&[Feed::hr("hr"), uk]);
    let text = std::fs::read_to_string(&env.config).expect("config");
    let at = text.find("name = \"uk\"").expect("feed uk");
    env.write_config(&format!(
        "{}{}",
        &text[..at],
        text[at..].replacen("default_country = \"US\"", "default_country = \"GB\"", 1)
    ));
    sample_imports_cleanly(&env, "hr");
    sample_imports_cleanly(&env, "uk");
    let header = env.run(&["feeds", "show", "uk", "--sample"]).stdout;
    assert!(header.starts_with("Employee ID;First Name;"), "{header}");
    assert!(header.contains(";+44"), "a GB number: {header}");

    // The 33-field benchmark feed too.
    let bench =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/bench/flagsync-bench.toml");
    let text = std::fs::read_to_string(bench).expect("bench config");
    let data = env.root.join("bench-data");
    let text = text
        .lines()
        .map(|l| {
            if l.starts_with("data_dir") {
                format!("data_dir = {}", toml_str(&data.display().to_string()))
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    env.write_config(&text);
    let name = text
        .lines()
        .find_map(|l| l.strip_prefix("name = \""))
        .and_then(|l| l.split('"').next())
        .expect("a feed name")
        .to_string();
    sample_imports_cleanly(&env, &name);
}

#[test]
fn feeds_show_names_columns_aliases_types_groups_and_filters() {
    let env = Env::new(&[Feed::hr("hr").filter("status", &["Active"])]);
    let out = env.run(&["feeds", "show", "hr"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let text = &out.stdout;
    assert!(text.contains("FIELD") && text.contains("COLUMN"), "{text}");
    assert!(
        text.lines().any(|l| l.contains("employee_id")
            && l.contains("id")
            && l.contains("yes")
            && l.contains("\"Employee ID\", \"EmpID\"")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("mobile") && l.contains("sms")),
        "{text}"
    );
    assert!(text.contains("groups from: department"), "{text}");
    assert!(
        text.contains("imports only rows where status is one of:"),
        "{text}"
    );

    let json = env
        .run(&["feeds", "show", "hr", "--json"])
        .json("feeds show --json");
    assert_eq!(json["feed"], "hr");
    assert_eq!(json["id_field"], "employee_id");
    assert_eq!(json["fields"][0]["aliases"][0], "EmpID");
    assert_eq!(json["fields"][4]["type"], "sms");
    assert_eq!(json["groups"][0], "department");
    assert_eq!(json["filters"][0]["field"], "status");

    let unknown = env.run(&["feeds", "show", "nope"]);
    assert_eq!(unknown.code, 2, "{unknown:#?}");
    assert!(
        unknown.stderr.contains("feed 'nope' is not configured"),
        "{unknown:#?}"
    );
}
