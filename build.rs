// Files the build embeds rebuild what uses them when they change: the
// migrations (`sqlx::migrate!`) and the statements `query_file!` reads
// (`src/db/sql/`). Neither macro makes cargo track its files on stable
// Rust, so an edited .sql file alone would otherwise leave a stale binary.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=src/db/sql");
}
