//! The binaries end to end on a small file: hrgen is deterministic and its
//! next-day variant changes what it says it changes; csvfloor and
//! csvdiff-peer count what the generator wrote.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().expect("run");
    assert!(
        out.status.success(),
        "{bin} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn meta(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn num(m: &BTreeMap<String, String>, k: &str) -> u64 {
    m[k].parse().unwrap()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn generate_next_day_floor_and_peer() {
    let hrgen = env!("CARGO_BIN_EXE_hrgen");
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let s = |name: &str| p(name).to_str().unwrap().to_string();

    run(
        hrgen,
        &[
            "--rows",
            "20000",
            "--seed",
            "3",
            "--out",
            &s("a.csv"),
            "--meta",
            &s("a.meta"),
        ],
    );
    run(
        hrgen,
        &["--rows", "20k", "--seed", "3", "--out", &s("b.csv")],
    );
    let a = std::fs::read(p("a.csv")).unwrap();
    assert_eq!(
        a,
        std::fs::read(p("b.csv")).unwrap(),
        "same seed, same bytes"
    );
    let am = meta(&p("a.meta"));
    assert_eq!(num(&am, "rows"), 20_000);
    assert_eq!(num(&am, "bytes"), a.len() as u64);
    assert_eq!(
        num(&am, "expect_added") + num(&am, "expect_filtered"),
        20_000
    );

    let next = |out: &str, meta: &str| {
        run(
            hrgen,
            &[
                "next-day",
                "--base",
                &s("a.csv"),
                "--seed",
                "4",
                "--out",
                &s(out),
                "--meta",
                &s(meta),
            ],
        );
    };
    next("n1.csv", "n1.meta");
    next("n2.csv", "n2.meta");
    assert_eq!(
        std::fs::read(p("n1.csv")).unwrap(),
        std::fs::read(p("n2.csv")).unwrap()
    );
    let nm = meta(&p("n1.meta"));
    let (changed, removed, added) = (num(&nm, "changed"), num(&nm, "removed"), num(&nm, "added"));
    assert_eq!(added, 100);
    assert!((120..=280).contains(&changed), "changed {changed}");
    assert!((50..=150).contains(&removed), "removed {removed}");
    assert_eq!(num(&nm, "rows"), 20_000 - removed + added);
    assert_eq!(
        num(&nm, "expect_added")
            + num(&nm, "expect_updated")
            + num(&nm, "expect_unchanged")
            + num(&nm, "expect_filtered"),
        num(&nm, "rows")
    );

    // Unchanged rows are byte-identical; the header too; IDs ascend.
    let base = lines(&p("a.csv"));
    let new = lines(&p("n1.csv"));
    assert_eq!(base[0], new[0]);
    let base_by_id: BTreeMap<&str, &str> =
        base[1..].iter().map(|l| (&l[..8], l.as_str())).collect();
    let (mut same, mut differ, mut fresh) = (0u64, 0u64, 0u64);
    let mut prev = "";
    for l in &new[1..] {
        let id = &l[..8];
        assert!(id > prev, "IDs ascend: {prev} then {id}");
        prev = id;
        match base_by_id.get(id) {
            Some(b) if *b == l.as_str() => same += 1,
            Some(_) => differ += 1,
            None => {
                assert!(id > "E0020000");
                fresh += 1;
            }
        }
    }
    assert_eq!((differ, fresh), (changed, added));
    assert_eq!(same, 20_000 - removed - changed);

    let floor = run(env!("CARGO_BIN_EXE_csvfloor"), &[&s("a.csv")]);
    assert_eq!(floor.trim(), "records=20000 fields=660000");

    let expect = format!("added={added} modified={changed} deleted={removed}");
    let peer = env!("CARGO_BIN_EXE_csvdiff-peer");
    assert_eq!(run(peer, &[&s("a.csv"), &s("n1.csv")]).trim(), expect);
    assert_eq!(
        run(peer, &["--lazy", &s("a.csv"), &s("n1.csv")]).trim(),
        expect
    );
}
