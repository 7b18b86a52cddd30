//! Configuration: errors exit 2 with a message that names the problem, from
//! both `flagsync check` and `flagsync import`; `--config` placement and
//! `FLAGSYNC_CONFIG`.

use crate::util::*;

/// Runs `check` and `import` against the configuration `text` and asserts
/// both exit 2 with a message containing every string of `needles` (and,
/// for each group of `any_of`, at least one of its strings; case-blind).
fn assert_config_error(text: &str, needles: &[&str], any_of: &[&[&str]]) {
    let env = Env::bare();
    env.write_config(&text.replace(PLACEHOLDER, &env.data_dir.display().to_string()));
    let file = env.input("people.csv", hr_file(1..=3));
    let file = file.to_str().unwrap();
    for args in [
        vec!["check"],
        vec!["import", "--feed", "hr", file, "--json"],
    ] {
        let out = env.run(&args);
        assert_eq!(out.code, 2, "`{}` must exit 2: {out:#?}", args[0]);
        let message = out.stderr.to_lowercase();
        for needle in needles {
            assert!(
                message.contains(&needle.to_lowercase()),
                "`{}`: message should contain {needle:?}:\n{}",
                args[0],
                out.stderr
            );
        }
        for group in any_of {
            assert!(
                group.iter().any(|n| message.contains(&n.to_lowercase())),
                "`{}`: message should contain one of {group:?}:\n{}",
                args[0],
                out.stderr
            );
        }
        assert!(
            !env.data_dir.exists()
                || std::fs::read_dir(&env.data_dir).map_or(0, |d| d.count()) == 0,
            "nothing may be imported on a configuration error"
        );
    }
}

/// The standard feed plus `extra` text fields: 8 + extra mapped fields.
fn feed_with_fields(extra: usize) -> Feed {
    let mut feed = Feed::hr("hr");
    for i in 1..=extra {
        feed = feed.field(Field::new(
            &format!("extra_{i}"),
            &format!("Extra {i}"),
            "text",
        ));
    }
    feed
}

/// Stands for the data dir in a configuration text until the test's temp
/// dir exists.
const PLACEHOLDER: &str = "@DATA_DIR@";

fn config(feeds: &[Feed]) -> String {
    config_text(std::path::Path::new(PLACEHOLDER), feeds)
}

#[test]
fn good_configuration_checks_ok() {
    let env = Env::new(&[feed_with_fields(25)]);
    assert_eq!(feed_with_fields(25).fields.len(), 33);
    let out = env.run(&["check"]);
    assert_eq!(out.code, 0, "{out:#?}");
}

#[test]
fn more_than_33_fields_is_a_configuration_error() {
    let feed = feed_with_fields(26);
    assert_eq!(feed.fields.len(), 34);
    assert_config_error(&config(&[feed]), &["33"], &[]);
}

#[test]
fn more_than_3_group_fields_is_a_configuration_error() {
    let feed = Feed::hr("hr").groups(&["department", "status", "last_name", "first_name"]);
    assert_config_error(&config(&[feed]), &["group", "3"], &[]);
}

#[test]
fn a_feed_without_an_id_field_is_a_configuration_error() {
    // Neither an `id_field` nor a field of type id.
    let mut feed = Feed::hr("hr");
    feed.id_field.clear();
    feed.fields.remove(0);
    assert_config_error(
        &config(&[feed]),
        &[],
        &[&["id_field", "id field", "\"id\"", "`id`", "'id'", "type id"]],
    );

    // An `id_field` naming no field.
    let mut feed = Feed::hr("hr");
    feed.id_field = "badge".into();
    feed.fields.remove(0);
    assert_config_error(&config(&[feed]), &["badge"], &[]);
}

#[test]
fn an_unknown_field_type_is_a_configuration_error() {
    let feed = Feed::hr("hr").replace_field(Field::new("mobile", "Mobile Phone", "phonez"));
    assert_config_error(&config(&[feed]), &["phonez"], &[]);
}

#[test]
fn duplicate_field_names_are_a_configuration_error() {
    let feed = Feed::hr("hr").field(Field::new("email", "Email 2", "email"));
    assert_config_error(
        &config(&[feed]),
        &["email"],
        &[&["dup", "twice", "more than once", "already", "unique"]],
    );
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let feed = Feed::hr("hr").extra("colour = \"blue\"");
    let text = config(&[feed]);
    let line = text
        .lines()
        .position(|l| l.starts_with("colour"))
        .expect("line with the key")
        + 1;
    assert_config_error(
        &text,
        &["colour"],
        &[&[&format!("line {line}"), &format!(":{line}:")]],
    );

    // Also in a nested table.
    let feed = Feed::hr("hr").replace_field(Field::new("status", "Status", "text"));
    let mut text = config(&[feed]);
    text = text.replacen(
        "  column = \"Status\"\n",
        "  column = \"Status\"\n  colum = \"x\"\n",
        1,
    );
    let line = text
        .lines()
        .position(|l| l.trim_start().starts_with("colum "))
        .expect("line with the key")
        + 1;
    assert_config_error(
        &text,
        &["colum"],
        &[&[&format!("line {line}"), &format!(":{line}:")]],
    );
}

#[test]
fn config_option_goes_before_or_after_the_subcommand_or_in_the_environment() {
    let good = Env::hr();
    let bad =
        Env::new(&[Feed::hr("hr").replace_field(Field::new("mobile", "Mobile Phone", "phonez"))]);
    for (env, want) in [(&good, 0), (&bad, 2)] {
        let config = env.config.to_str().unwrap();

        let mut before = env.command();
        before.args(["--config", config, "check"]);
        assert_eq!(run_command(before, "--config F check").code, want);

        let mut after = env.command();
        after.args(["check", "--config", config]);
        assert_eq!(run_command(after, "check --config F").code, want);

        let mut from_env = env.command();
        from_env.env("FLAGSYNC_CONFIG", config).arg("check");
        assert_eq!(run_command(from_env, "FLAGSYNC_CONFIG=F check").code, want);
    }

    // The same three ways for import, each landing in the configured store.
    let file = good.input("people.csv", hr_file(1..=4));
    let file = file.to_str().unwrap();
    let config = good.config.to_str().unwrap();

    let mut after = good.command();
    after.args(["import", "--feed", "hr", file, "--config", config, "--json"]);
    let out = run_command(after, "import ... --config F");
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.json("import")["added"], 4);

    let mut from_env = good.command();
    from_env
        .env("FLAGSYNC_CONFIG", config)
        .args(["import", "--feed", "hr", file, "--json"]);
    let out = run_command(from_env, "FLAGSYNC_CONFIG=F import");
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.json("import")["state"], "unchanged");

    let mut before = good.command();
    before.args(["--config", config, "import", "--feed", "hr", file, "--json"]);
    let out = run_command(before, "--config F import");
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.json("import")["state"], "unchanged");
    assert_eq!(good.exported_ids("hr").len(), 4);
}

#[test]
fn a_missing_config_file_is_an_error() {
    let env = Env::bare();
    let out = env.run(&["check"]);
    assert_ne!(out.code, 0, "{out:#?}");
    assert!(
        out.stderr.contains("flagsync-test.toml"),
        "message should name the file: {}",
        out.stderr
    );
}

#[test]
fn an_unknown_feed_is_a_usage_error() {
    let env = Env::hr();
    let file = env.input("people.csv", hr_file(1..=3));
    let out = env.run(&["import", "--feed", "nosuch", file.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("nosuch"), "{}", out.stderr);
}

/// `[sftp] temporary_suffixes`: a list of name endings; `check` names a
/// bad one with its line, and accepts a good list.
#[test]
fn temporary_suffixes_are_validated_by_check() {
    let with_suffixes = |list: &str| {
        config(&[Feed::hr("hr")]).replace(
            "listen = \"127.0.0.1:2222\"\n",
            &format!("listen = \"127.0.0.1:2222\"\ntemporary_suffixes = {list}\n"),
        )
    };
    let bad = with_suffixes("[\".part\", \"up/load\"]");
    assert!(bad.contains("temporary_suffixes"), "{bad}");
    assert_config_error(&bad, &["temporary_suffixes", "up/load", "line 5"], &[]);

    let env = Env::bare();
    let good = with_suffixes("[\".part\", \".uploading\"]");
    env.write_config(&good.replace(PLACEHOLDER, &env.data_dir.display().to_string()));
    let out = env.run(&["check"]);
    assert_eq!(out.code, 0, "{out:#?}");
}

#[test]
fn legacy_algorithms_is_a_switch_checked_with_the_rest() {
    let with =
        |line: &str| config(&[Feed::hr("hr")]).replace("[sftp]\n", &format!("[sftp]\n{line}\n"));
    assert_config_error(
        &with("legacy_algorithms = \"yes\""),
        &["line", "boolean"],
        &[],
    );
    assert_config_error(
        &with("legacy_algorithm = true"),
        &["legacy_algorithm", "spelling"],
        &[],
    );
    let env = Env::bare();
    env.write_config(
        &with("legacy_algorithms = true").replace(PLACEHOLDER, &env.data_dir.display().to_string()),
    );
    let out = env.run(&["check"]);
    assert_eq!(out.code, 0, "legacy_algorithms = true: {out:#?}");
}

#[test]
fn a_time_zone_that_does_not_exist_is_a_clear_error() {
    let text = config(&[Feed::hr("hr")]);
    let at = text.find("[sftp]").expect("an [sftp] table");
    let bad = format!(
        "{}timezone = \"Mars/Olympus\"\n{}",
        &text[..at],
        &text[at..]
    );
    assert_config_error(&bad, &["timezone", "Mars/Olympus", "IANA"], &[]);
}
