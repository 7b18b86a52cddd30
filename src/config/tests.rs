use super::*;

fn feed_with_fields(n: usize) -> String {
    let mut s = String::from("[[feed]]\nname = \"hr\"\n");
    s.push_str("  [[feed.field]]\n  name = \"id\"\n  column = \"ID\"\n  type = \"id\"\n");
    for i in 1..n {
        s.push_str(&format!(
            "  [[feed.field]]\n  name = \"f{i}\"\n  column = \"F{i}\"\n"
        ));
    }
    s
}

fn problems(text: &str) -> String {
    match Config::parse(text, Source::Embedded) {
        Ok(_) => panic!("expected a configuration error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn embedded_default_is_valid() {
    let c = Config::embedded().expect("embedded default must be valid");
    let demo = c.feed("demo").expect("demo feed");
    assert_eq!(demo.id().name, "employee_id");
    assert_eq!(c.data_dir, PathBuf::from("./flagsync-data"));
}

#[test]
fn thirty_three_fields_are_fine_thirty_four_are_not() {
    assert!(Config::parse(&feed_with_fields(33), Source::Embedded).is_ok());
    let msg = problems(&feed_with_fields(34));
    assert!(msg.contains("maps 34 fields; at most 33"), "{msg}");
    assert!(msg.contains("line "), "{msg}");
}

#[test]
fn unknown_key_names_key_and_line() {
    let msg = problems("data_dir = \"x\"\ncolour = \"red\"\n");
    assert!(msg.contains("line 2"), "{msg}");
    assert!(msg.contains("colour"), "{msg}");
}

#[test]
fn missing_id_unknown_type_duplicates_and_groups_are_all_reported() {
    let text = r#"
[[feed]]
name = "hr"
group_fields = ["a", "b", "c", "d"]
  [[feed.field]]
  name = "a"
  type = "phone"
  [[feed.field]]
  name = "a"
  [[feed.field]]
  name = "b"
  [[feed.field]]
  name = "c"
  [[feed.field]]
  name = "d"
"#;
    let msg = problems(text);
    assert!(msg.contains("no id field"), "{msg}");
    assert!(msg.contains("unknown type 'phone'"), "{msg}");
    assert!(msg.contains("used twice"), "{msg}");
    assert!(msg.contains("at most 3 are allowed"), "{msg}");
    assert!(msg.contains("line 7"), "{msg}");
}

#[test]
fn thresholds_and_schedules() {
    let base = feed_with_fields(2);
    let c = Config::parse(
        &base.replace(
            "name = \"hr\"\n",
            "name = \"hr\"\ndelete_threshold = 500\nschedule = \"daily 02:30\"\n",
        ),
        Source::Embedded,
    )
    .expect("valid");
    let feed = &c.feeds[0];
    assert_eq!(feed.delete_threshold, Threshold::Count(500));
    assert_eq!(
        feed.schedule,
        Schedule::Daily {
            hour: 2,
            minute: 30,
            second: 0
        }
    );
    let msg = problems(&base.replace(
        "name = \"hr\"\n",
        "name = \"hr\"\ndelete_threshold = \"ten\"\n",
    ));
    assert!(msg.contains("delete_threshold"), "{msg}");
}

#[test]
fn search_and_filter_default_by_type_and_name_and_can_be_set() {
    let text = "[[feed]]\nname = \"hr\"\n\
        [[feed.field]]\nname = \"id\"\ncolumn = \"ID\"\ntype = \"id\"\n\
        [[feed.field]]\nname = \"last_name\"\ncolumn = \"Last\"\n\
        [[feed.field]]\nname = \"city\"\ncolumn = \"City\"\n\
        [[feed.field]]\nname = \"email\"\ncolumn = \"Email\"\ntype = \"email\"\nsearch = false\n\
        [[feed.field]]\nname = \"status\"\ncolumn = \"Status\"\nfilter = true\n\
        [[feed.field]]\nname = \"tags\"\ncolumn = \"Tags\"\ntype = \"multi\"\nseparator = \";\"\n";
    let c = Config::parse(text, Source::Embedded).unwrap();
    let f = &c.feeds[0].fields;
    let searched: Vec<&str> = f
        .iter()
        .filter(|f| f.search)
        .map(|f| f.name.as_str())
        .collect();
    let filtered: Vec<&str> = f
        .iter()
        .filter(|f| f.filter)
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(searched, ["id", "last_name"]);
    assert_eq!(filtered, ["status", "tags"]);
    let msg = problems(&text.replace("filter = true", "filter = \"yes\""));
    assert!(msg.contains("line"), "{msg}");
}

#[test]
fn a_text_field_named_by_id_field_is_the_id_and_cannot_be_a_group() {
    let text = "[[feed]]\nname = \"hr\"\nid_field = \"emp\"\n  [[feed.field]]\n  name = \"emp\"\n  column = \"Emp\"\n  [[feed.field]]\n  name = \"dept\"\n  column = \"Dept\"\n";
    let c = Config::parse(text, Source::Embedded).expect("valid");
    let feed = c.feed("hr").unwrap();
    assert_eq!(feed.id().name, "emp");
    assert_eq!(feed.id().kind, FieldKind::Id, "as if it said type = \"id\"");
    assert!(feed.id().search);
    let grouped = text.replace(
        "id_field = \"emp\"\n",
        "id_field = \"emp\"\ngroup_fields = [\"emp\"]\n",
    );
    assert!(problems(&grouped).contains("cannot be a group field"));
}

#[test]
fn the_configuration_reference_names_every_key_in_its_table() {
    let reference = include_str!("../../docs/CONFIGURATION.md");
    let tables = [
        "sftp", "web", "smtp", "feed", "field", "filter", "webhook", "scim",
    ];
    for (table, keys) in raw::known_keys() {
        assert!(!keys.is_empty(), "no keys heard for {table}");
        let heading = if table == "top level" {
            "## Top level".to_string()
        } else if table.starts_with("[[feed.") || table.starts_with("[feed.") {
            format!("### `{table}`")
        } else {
            format!("## `{table}`")
        };
        let start = reference
            .find(&heading)
            .unwrap_or_else(|| panic!("docs/CONFIGURATION.md has no section {heading}"));
        let rest = &reference[start + heading.len()..];
        let end = rest.find("\n#").unwrap_or(rest.len());
        let section = &rest[..end];
        for key in keys.iter().filter(|k| !tables.contains(k)) {
            assert!(
                section.contains(&format!("| `{key}` |")),
                "docs/CONFIGURATION.md does not describe `{key}` in its section {heading}"
            );
        }
    }
}

#[test]
fn temporary_suffixes_default_to_the_clients_names_and_can_be_set() {
    let feed = feed_with_fields(1);
    let c = Config::parse(&feed, Source::Embedded).expect("no [sftp] table");
    assert_eq!(
        c.sftp.temporary_suffixes,
        [".part", ".filepart", ".tmp", ".partial"]
    );
    let text = format!("[sftp]\ntemporary_suffixes = [\".UPLOADING\"]\n{feed}");
    let c = Config::parse(&text, Source::Embedded).expect("one suffix");
    assert_eq!(c.sftp.temporary_suffixes, [".uploading"]);
    let msg = problems("[sftp]\ntemporary_suffixes = [\".part\", \"\", \"a/b\"]\n");
    assert!(msg.contains("line 2"), "{msg}");
    assert!(
        msg.contains("\"\" is not the ending of a file name"),
        "{msg}"
    );
    assert!(msg.contains("\"a/b\""), "{msg}");
    let msg = problems("[sftp]\ntemporary_suffix = [\".part\"]\n");
    assert!(msg.contains("temporary_suffix"), "{msg}");
}

#[test]
fn a_feed_names_the_workbook_sheet_it_reads() {
    let with = |sheet: &str| {
        feed_with_fields(1).replace(
            "name = \"hr\"\n",
            &format!("name = \"hr\"\nsheet = {sheet:?}\n"),
        )
    };
    let config = Config::parse(&with("Staff list"), Source::Embedded).unwrap();
    assert_eq!(config.feeds[0].sheet.as_deref(), Some("Staff list"));
    let config = Config::parse(&feed_with_fields(1), Source::Embedded).unwrap();
    assert_eq!(config.feeds[0].sheet, None, "the first visible sheet");
    assert!(problems(&with(" ")).contains("sheet = \" \" names no sheet"));
}

#[test]
fn openpgp_settings_need_each_other() {
    let with = |lines: &str| {
        feed_with_fields(2).replacen("name = \"hr\"\n", &format!("name = \"hr\"\n{lines}"), 1)
    };
    let c = Config::parse(
        &with("pgp_private_key_file = \"/k/hr.key\"\npgp_signer_key_file = \"/k/s.asc\"\nrequire_signature = true\n"),
        Source::Embedded,
    )
    .expect("valid");
    let hr = c.feed("hr").unwrap();
    assert_eq!(
        hr.pgp_private_key_file.as_deref(),
        Some(Path::new("/k/hr.key"))
    );
    assert_eq!(
        hr.pgp_signer_key_file.as_deref(),
        Some(Path::new("/k/s.asc"))
    );
    assert!(hr.require_signature);
    let plain = Config::parse(&feed_with_fields(2), Source::Embedded).unwrap();
    assert!(!plain.feed("hr").unwrap().require_signature);

    let msg = problems(&with(
        "pgp_private_key_file = \"/k/hr.key\"\nrequire_signature = true\n",
    ));
    assert!(
        msg.contains("feed 'hr': require_signature = true needs pgp_signer_key_file")
            && msg.contains("line 4"),
        "{msg}"
    );
    let msg = problems(&with("pgp_signer_key_file = \"/k/s.asc\"\n"));
    assert!(
        msg.contains("pgp_signer_key_file is set without pgp_private_key_file"),
        "{msg}"
    );
    let msg = problems(&with("pgp_private_key_file = \"\"\n"));
    assert!(msg.contains("cannot be empty"), "{msg}");
}
