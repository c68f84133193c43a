//! The link check of the README and docs/: every link to a page of the repository must reach a file, and
//! every `#anchor` a heading of the page it names, as GitHub renders them. The README is a front door whose
//! sections moved to docs/, one page per reader; a link that lands nowhere hides the page behind it.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Component, Path, PathBuf},
};

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

/// What GitHub's renderer turns on beyond CommonMark: a table's cells hold links, and a heading's text is
/// what the slug is made of.
fn options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS | Options::ENABLE_FOOTNOTES
}

/// A heading's anchor as GitHub makes it (github-slugger): lower case, each space a `-`, and every other
/// character that is not a letter, a digit, `-` or `_` left out. `Events (`--json`)` is `events---json`.
pub fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a page's headings, in order; a heading whose slug came before gets `-1`, `-2`, as on GitHub.
pub fn anchors(markdown: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = Vec::new();
    let mut heading: Option<String> = None;
    for event in Parser::new_ext(markdown, options()) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(text) | Event::Code(text) => {
                if let Some(heading) = heading.as_mut() {
                    heading.push_str(&text);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let base = slug(&heading.take().unwrap_or_default());
                let count = seen.entry(base.clone()).or_insert(0);
                anchors.push(if *count == 0 { base.clone() } else { format!("{base}-{count}") });
                *count += 1;
            }
            _ => {}
        }
    }
    anchors
}

/// A link as written: its text and its target.
#[derive(Debug, PartialEq)]
pub struct Link {
    pub text: String,
    pub target: String,
}

/// Every link and image of a page, with its text; what sits in code (a span or a block) is not a link.
pub fn links(markdown: &str) -> Vec<Link> {
    let mut links = Vec::new();
    let mut open: Vec<Link> = Vec::new();
    for event in Parser::new_ext(markdown, options()) {
        match event {
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                open.push(Link { text: String::new(), target: dest_url.to_string() });
            }
            Event::Text(text) | Event::Code(text) => {
                if let Some(link) = open.last_mut() {
                    link.text.push_str(&text);
                }
            }
            Event::End(TagEnd::Link | TagEnd::Image) => links.extend(open.pop()),
            _ => {}
        }
    }
    links
}

/// `target` read from the page at `page` (both relative to the repository's root): `../README.md` from
/// `docs/events.md` is `README.md`; a target starting with `/` is from the root, as GitHub reads it.
fn resolve(page: &Path, target: &str) -> PathBuf {
    let start =
        if target.starts_with('/') { PathBuf::new() } else { page.parent().unwrap_or(Path::new("")).to_owned() };
    let mut resolved = PathBuf::new();
    for component in start.join(target.trim_start_matches('/')).components() {
        match component {
            Component::ParentDir => {
                // Above the root is nowhere: `..` stays, and no file of the repository is there.
                let above_root = !resolved.pop();
                if above_root {
                    resolved.push("..");
                }
            }
            Component::Normal(part) => resolved.push(part),
            _ => {}
        }
    }
    resolved
}

/// Each link of `pages` (path from the root to text) that lands nowhere, said as `PAGE: [TEXT](TARGET): WHY`.
/// `read` gives a file's text from its path from the root (a directory's as empty), `None` when it does not
/// exist. Links with a scheme (`https:`, `mailto:`) are left to the outside world.
pub fn broken_links(pages: &BTreeMap<PathBuf, String>, read: impl Fn(&Path) -> Option<String>) -> Vec<String> {
    let mut broken = Vec::new();
    for (page, text) in pages {
        for link in links(text) {
            let target = link.target.as_str();
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let (path, body) = if file.is_empty() {
                (page.clone(), Some(text.clone()))
            } else {
                let path = resolve(page, file);
                let body = read(&path);
                (path, body)
            };
            let said = |why: String| format!("{}: [{}]({}): {why}", page.display(), link.text, link.target);
            let Some(body) = body else {
                broken.push(said(format!("no file {}", path.display())));
                continue;
            };
            let is_page = path.extension().is_some_and(|extension| extension == "md");
            if !anchor.is_empty() && is_page && !anchors(&body).iter().any(|a| a == anchor) {
                broken.push(said(format!("no heading #{anchor} in {}", path.display())));
            }
        }
    }
    broken
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file's text from the repository on disk; a directory, or a file that is not text (an image),
    /// reads as empty.
    fn read(root: &Path, path: &Path) -> Option<String> {
        let full = root.join(path);
        if full.is_dir() {
            Some(String::new())
        } else {
            std::fs::read(full).ok().map(|bytes| String::from_utf8(bytes).unwrap_or_default())
        }
    }

    /// The README and every page of docs/.
    fn pages(root: &Path) -> BTreeMap<PathBuf, String> {
        let mut paths = vec![PathBuf::from("README.md")];
        for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
            let path = entry.expect("an entry of docs/").path();
            if path.extension().is_some_and(|extension| extension == "md") {
                paths.push(path.strip_prefix(root).expect("under the root").to_owned());
            }
        }
        paths.into_iter().map(|path| (path.clone(), read(root, &path).expect("a page"))).collect()
    }

    #[test]
    fn every_link_of_the_readme_and_docs_reaches_its_page_and_heading() {
        let root = crate::workspace_root();
        let pages = pages(&root);
        assert!(pages.len() > 5, "the README and docs/ hold the pages: {:?}", pages.keys());
        let broken = broken_links(&pages, |path| read(&root, path));
        assert!(broken.is_empty(), "links that land nowhere:\n  {}", broken.join("\n  "));
    }

    #[test]
    fn slugs_are_githubs() {
        assert_eq!(slug("Events (`--json`)"), "events---json");
        assert_eq!(slug("The seed's cases, explained"), "the-seeds-cases-explained");
        assert_eq!(slug("Is the port open? `udptrace check`"), "is-the-port-open-udptrace-check");
        assert_eq!(slug("dns_drop & Ünïcode 1.2"), "dns_drop--ünïcode-12");
    }

    #[test]
    fn a_heading_is_read_with_its_code_and_a_repeated_one_is_numbered() {
        let page = "# Events (`--json`)\n\n## Usage\n\ntext\n\n## Usage\n\n## Usage\n\n```\n# not a heading\n```\n";
        assert_eq!(anchors(page), ["events---json", "usage", "usage-1", "usage-2"]);
    }

    #[test]
    fn links_in_code_are_not_links_and_reference_links_are() {
        let page = "See [a](a.md), `[b](b.md)`, [c][ref] and ![d](d.png).\n\n```\n[e](e.md)\n```\n\n    [f](f.md)\n\n\
                    | x |\n|---|\n| [g](g.md#h) |\n\n[ref]: c.md#x\n";
        let targets: Vec<String> = links(page).into_iter().map(|l| l.target).collect();
        assert_eq!(targets, ["a.md", "c.md#x", "d.png", "g.md#h"]);
    }

    #[test]
    fn a_missing_file_and_a_missing_heading_are_named_and_the_rest_pass() {
        let files: BTreeMap<PathBuf, String> = [
            ("README.md", "# Top\n\n[ok](docs/a.md#two) [self](#top) [web](https://example.com/x.md#nowhere)\n\
                           [gone](docs/gone.md) [no heading](docs/a.md#three) [no self](#bottom) [code](udptrace/src)\n"),
            ("docs/a.md", "# One\n\n## Two\n\n[back](../README.md#top) [up too far](../../README.md)\n"),
        ]
        .into_iter()
        .map(|(path, text)| (PathBuf::from(path), text.to_owned()))
        .collect();
        let read = |path: &Path| match path.to_str() {
            Some("udptrace/src") => Some(String::new()),
            _ => files.get(path).cloned(),
        };
        assert_eq!(
            broken_links(&files, read),
            [
                "README.md: [gone](docs/gone.md): no file docs/gone.md",
                "README.md: [no heading](docs/a.md#three): no heading #three in docs/a.md",
                "README.md: [no self](#bottom): no heading #bottom in README.md",
                "docs/a.md: [up too far](../../README.md): no file ../README.md",
            ]
        );
    }
}
