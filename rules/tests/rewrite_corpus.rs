//! The rewrite corpus (tests/data/rewrite_corpus.txt): realistic statements
//! and their exact rewrites. `REWRITE_BLESS=1` rewrites the file with the
//! current output, for review.

mod rewrite_support;
mod shape_support;

use pgshift_rules::classify::shape::shape;
use pgshift_rules::Rewrite;

const CORPUS: &str = "tests/data/rewrite_corpus.txt";

struct Case {
    name: String,
    catalog: bool,
    input: String,
    expected: String,
}

fn cases(text: &str) -> (String, Vec<Case>) {
    let start = text.find("=== ").unwrap_or(text.len());
    let header = text[..start].to_owned();
    let mut out = Vec::new();
    for block in text[start..].split("=== ").filter(|b| !b.trim().is_empty()) {
        let (title, rest) = block.split_once('\n').unwrap_or((block, ""));
        let (input, expected) = rest.split_once("\n---\n").unwrap_or((rest, ""));
        let catalog = title.ends_with("[catalog]");
        out.push(Case {
            name: title.trim_end_matches("[catalog]").trim().to_owned(),
            catalog,
            input: input.trim().to_owned(),
            expected: expected.trim().to_owned(),
        });
    }
    (header, out)
}

fn render(r: &Rewrite) -> String {
    match r {
        Rewrite::Unchanged => "UNCHANGED".into(),
        Rewrite::Changed(s) => s.to_string(),
        Rewrite::Refused(reason) => format!("REFUSED: {reason}"),
    }
}

#[test]
fn corpus() {
    let text = std::fs::read_to_string(CORPUS).expect("corpus file");
    let (header, cases) = cases(&text);
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let plain = rewrite_support::rewriter(false);
    let catalog = rewrite_support::rewriter(true);
    let bless = std::env::var_os("REWRITE_BLESS").is_some();
    let mut blessed = header;
    let mut failures = Vec::new();
    for case in &cases {
        let rewriter = if case.catalog { &catalog } else { &plain };
        let got = rewriter.rewrite(&case.input);
        // The cached answer is the same.
        assert_eq!(rewriter.rewrite(&case.input), got, "{}", case.name);
        let shown = render(&got);
        if bless {
            let tag = if case.catalog { " [catalog]" } else { "" };
            blessed.push_str(&format!(
                "=== {}{tag}\n{}\n---\n{shown}\n\n",
                case.name, case.input
            ));
            continue;
        }
        let ok = match case.expected.strip_prefix("REFUSED: ") {
            Some(want) => matches!(&got, Rewrite::Refused(r) if r.contains(want)),
            None => shown == case.expected,
        };
        if !ok {
            failures.push(format!(
                "{}:\n  input:    {}\n  expected: {}\n  got:      {shown}",
                case.name, case.input, case.expected
            ));
        }
        if let Rewrite::Changed(out) = &got {
            if let Err(e) = pg_query::parse(out, 0) {
                failures.push(format!("{}: output does not parse: {e}: {out}", case.name));
            }
        }
        if case.expected != "UNCHANGED" && !case.expected.starts_with("REFUSED") {
            assert!(
                pg_query::parse(&case.expected, 0).is_ok(),
                "{}: expected output does not parse",
                case.name
            );
        }
    }
    if bless {
        std::fs::write(CORPUS, blessed).expect("write corpus");
        return;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Texts that differ only in literals share one rewrite: every variant of a
/// corpus input, rewritten through a cache that saw the input first, is
/// what rewriting it uncached gives.
#[test]
fn variants_share_the_rewrite_of_their_shape() {
    let text = std::fs::read_to_string(CORPUS).expect("corpus file");
    let (_, cases) = cases(&text);
    let (mut shaped, mut shared) = (0, 0);
    for case in &cases {
        let Some(s) = shape(&case.input) else {
            continue;
        };
        shaped += 1;
        let cached = rewrite_support::rewriter(case.catalog);
        let fresh = rewrite_support::rewriter(case.catalog);
        cached.rewrite(&case.input);
        for pick in 0..4 {
            let variant = shape_support::with_literals(&case.input, &s.literals, pick);
            let want = fresh.rewrite_uncached(&variant);
            assert_eq!(cached.rewrite(&variant), want, "{}: {variant}", case.name);
        }
        if cached.stats().misses == 1 {
            shared += 1;
        }
    }
    assert!(shaped >= 20, "only {shaped} inputs have literals");
    assert!(shared >= 15, "only {shared} of {shaped} shared a rewrite");
}
