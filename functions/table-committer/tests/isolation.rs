//! The loaders' binaries never grow because of the committer: none of its heavy crates (the
//! Iceberg crates, Arrow/Parquet 58, opendal, sqlx, the S3 Tables SDK) is in a loader's
//! dependency tree.

use std::process::Command;

fn tree(package: &str) -> String {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            package,
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn the_loaders_depend_on_nothing_the_committer_brings() {
    // Given the committer's own tree holds the heavy crates
    let committer = tree("table-committer");
    for heavy in [
        "iceberg v0.10",
        "arrow-array v58",
        "opendal v",
        "sqlx v",
        "aws-sdk-s3tables v",
    ] {
        assert!(
            committer.contains(heavy),
            "the committer should hold {heavy}"
        );
    }
    // Then neither loader's does
    for loader in ["kinesis-loader", "kafka-loader"] {
        let t = tree(loader);
        for heavy in [
            "iceberg",
            "arrow-array v58",
            "opendal",
            "sqlx",
            "aws-sdk-s3tables",
            "streamload-table",
        ] {
            assert!(!t.contains(heavy), "{loader} depends on {heavy}");
        }
    }
}
