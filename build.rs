//! Rebuilds the binary when an embedded module or the Nickel library changes
//! (`include_dir!` alone does not tell cargo which files it read).

fn main() {
    println!("cargo:rerun-if-changed=platforms");
    println!("cargo:rerun-if-changed=schemas/pequod");
    println!("cargo:rerun-if-changed=schemas/json");
}
