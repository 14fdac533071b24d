use std::time::Instant;
fn main() {
    let n: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let c = pgshift_rules::Classifier::new(0);
    let sql = format!(
        "INSERT INTO t VALUES {}",
        vec!["(1,'abcdefgh')"; n].join(",")
    );
    let t = Instant::now();
    let x = c.classify(&sql);
    println!("{} bytes: {:?} kind={}", sql.len(), t.elapsed(), x.kind());
}
