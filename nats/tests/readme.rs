//! The README's "Scaling out" example is the crate documentation's example
//! (which rustdoc compiles): the two stay the same.

#[test]
fn the_readme_example_is_the_crate_example() {
    let readme = include_str!("../../README.md");
    let section = &readme[readme
        .find("## Scaling out")
        .expect("a Scaling out section")..];
    let start = section.find("```rust,ignore\n").expect("an example") + "```rust,ignore\n".len();
    let readme_example = &section[start..start + section[start..].find("```").unwrap()];

    let lib = include_str!("../src/lib.rs");
    let lines: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let open = lines
        .iter()
        .position(|l| *l == "```no_run")
        .expect("a crate example");
    let close = open + 1 + lines[open + 1..].iter().position(|l| *l == "```").unwrap();
    let crate_example: String = lines[open + 1..close]
        .iter()
        .filter(|l| !l.starts_with("# "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(readme_example, crate_example);
}
