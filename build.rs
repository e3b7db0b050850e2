fn main() {
    // include_dir! does not tell cargo which files it read: rebuild when a
    // migration changes.
    println!("cargo::rerun-if-changed=migrations");
}
