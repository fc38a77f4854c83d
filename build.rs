// The migrations are embedded by `sqlx::migrate!`: rebuild when one changes
// (an edited or added .sql file alone would otherwise leave a stale binary).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
