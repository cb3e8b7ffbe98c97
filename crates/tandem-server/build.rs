//! `include_dir!` embeds `web-demo/dist` but does not tell cargo about the files it read, so a
//! rebuilt demo bundle would not be picked up without this.
fn main() {
    println!("cargo:rerun-if-changed=../../web-demo/dist");
}
