//! Setting a few keys in a technician's config file without losing their comments.
//!
//! `toml_edit` is not in the dependency tree and `toml` drops comments and sorts keys, so the
//! keys are set by editing lines: replace `key = …` inside `[section]`, add it at the end of
//! the section, or append the section. The edit is then *proved*: the edited text must parse
//! to exactly the original table with the new values. When it does not (multi-line values,
//! dotted keys, inline tables — unusual in a hand-written config), the result is the `toml`
//! re-serialisation of that table instead, and the caller says that comments were lost.

/// One key to set, as a string value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub section: &'static str,
    pub key: &'static str,
    pub value: String,
}

impl Setting {
    pub fn dotted(&self) -> String {
        format!("{}.{}", self.section, self.key)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub text: String,
    /// The file's comments and layout survived (false: rewritten by `toml`).
    pub comments_kept: bool,
}

/// Set every `settings` key in `original` (a TOML document, possibly empty). The error says
/// why the original cannot be merged into (it is not TOML, or a section is not a table).
pub fn merge(original: &str, settings: &[Setting]) -> Result<Merged, String> {
    let original_table: toml::Table = original
        .parse()
        .map_err(|e: toml::de::Error| e.message().to_owned())?;
    let mut expected = original_table;
    for s in settings {
        let section = expected
            .entry(s.section.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(table) = section else {
            return Err(format!(
                "`{}` is a value, not a [{}] table",
                s.section, s.section
            ));
        };
        table.insert(s.key.to_owned(), toml::Value::String(s.value.clone()));
    }
    let edited = edit_lines(original, settings);
    if edited.parse::<toml::Table>().ok().as_ref() == Some(&expected) {
        return Ok(Merged {
            text: edited,
            comments_kept: true,
        });
    }
    let text = toml::to_string(&expected).map_err(|e| e.to_string())?;
    Ok(Merged {
        text,
        comments_kept: false,
    })
}

/// `[name]` → (false, "name"), `[[name]]` → (true, "name"); `None` for other lines.
fn header(line: &str) -> Option<(bool, String)> {
    let t = line.trim_start();
    if !t.starts_with('[') {
        return None;
    }
    let array = t.starts_with("[[");
    let (open, close) = if array {
        (2, t.find("]]")?)
    } else {
        (1, t.find(']')?)
    };
    let name = t.get(open..close)?;
    let name = name.split('.').map(str::trim).collect::<Vec<_>>().join(".");
    Some((array, name))
}

/// The bare (or simply quoted) key of a `key = value` line.
fn key_of(line: &str) -> Option<&str> {
    let t = line.trim_start();
    if t.starts_with('#') || t.starts_with('[') {
        return None;
    }
    let (key, _) = t.split_once('=')?;
    let key = key.trim();
    let key = key
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(key);
    Some(key)
}

/// The trailing `# comment` of a `key = value` line (with the spaces before it), if any: the
/// first `#` before which the line is a complete TOML key/value (a `#` inside a string is not
/// a comment).
fn trailing_comment(line: &str) -> &str {
    let Some((_, rest)) = line.split_once('=') else {
        return "";
    };
    for (index, _) in rest.match_indices('#') {
        let value = &rest[..index];
        if format!("k = {value}").parse::<toml::Table>().is_ok() {
            let start = value.trim_end().len();
            return &rest[start..];
        }
    }
    ""
}

fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

fn edit_lines(original: &str, settings: &[Setting]) -> String {
    let mut lines: Vec<String> = original.lines().map(str::to_owned).collect();
    let mut sections: Vec<&'static str> = Vec::new();
    for s in settings {
        if !sections.contains(&s.section) {
            sections.push(s.section);
        }
    }
    for section in sections {
        let keys: Vec<&Setting> = settings.iter().filter(|s| s.section == section).collect();
        let found = lines
            .iter()
            .position(|l| header(l) == Some((false, section.to_owned())));
        let Some(start) = found else {
            if lines.last().is_some_and(|l| !l.trim().is_empty()) {
                lines.push(String::new());
            }
            lines.push(format!("[{section}]"));
            for s in keys {
                lines.push(format!("{} = {}", s.key, quoted(&s.value)));
            }
            continue;
        };
        let mut end = lines[start + 1..]
            .iter()
            .position(|l| header(l).is_some())
            .map_or(lines.len(), |i| start + 1 + i);
        for s in keys {
            let value = quoted(&s.value);
            let existing = (start + 1..end).find(|&i| key_of(&lines[i]) == Some(s.key));
            match existing {
                Some(i) => {
                    let line = &lines[i];
                    let indent = &line[..line.len() - line.trim_start().len()];
                    let comment = trailing_comment(line);
                    lines[i] = format!("{indent}{} = {value}{comment}", s.key);
                }
                None => {
                    let after = (start + 1..end)
                        .rev()
                        .find(|&i| is_content(&lines[i]))
                        .unwrap_or(start);
                    lines.insert(after + 1, format!("{} = {value}", s.key));
                    end += 1;
                }
            }
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn quoted(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn settings() -> Vec<Setting> {
        vec![
            Setting {
                section: "agent",
                key: "id",
                value: "store-0042/till-1".into(),
            },
            Setting {
                section: "sync",
                key: "broker",
                value: "mqtts://broker.example:8883".into(),
            },
            Setting {
                section: "sync",
                key: "ca_file",
                value: "/etc/relais/ca.pem".into(),
            },
        ]
    }

    #[test]
    fn keys_are_replaced_in_place_and_comments_survive() {
        let original = "# store 42\n[agent]\nid = \"demo/x\"   # set by provisioning\ndata_dir = \"/var/lib/relais\"\n\n# the link\n[sync]\nbroker = \"mqtt://old:1883\"\nack = \"central\" # end to end\n\n[[devices.serial]]\nname = \"s\"\npath = \"/dev/ttyACM0\"\n";
        let merged = merge(original, &settings()).unwrap();
        assert!(merged.comments_kept);
        assert_eq!(
            merged.text,
            "# store 42\n[agent]\nid = \"store-0042/till-1\"   # set by provisioning\ndata_dir = \"/var/lib/relais\"\n\n# the link\n[sync]\nbroker = \"mqtts://broker.example:8883\"\nack = \"central\" # end to end\nca_file = \"/etc/relais/ca.pem\"\n\n[[devices.serial]]\nname = \"s\"\npath = \"/dev/ttyACM0\"\n"
        );
    }

    #[test]
    fn missing_sections_are_appended_and_an_empty_file_gets_every_key() {
        let merged = merge("", &settings()).unwrap();
        assert!(merged.comments_kept);
        assert_eq!(
            merged.text,
            "[agent]\nid = \"store-0042/till-1\"\n\n[sync]\nbroker = \"mqtts://broker.example:8883\"\nca_file = \"/etc/relais/ca.pem\"\n"
        );
    }

    #[test]
    fn merging_twice_gives_the_same_text() {
        let once = merge("[log]\nlevel = \"debug\"\n", &settings()).unwrap();
        let twice = merge(&once.text, &settings()).unwrap();
        assert_eq!(once, twice);
    }

    #[test]
    fn a_hash_inside_a_string_is_not_taken_for_a_comment() {
        let original = "[sync]\nbroker = \"mqtt://a#b\" # old\n";
        let merged = merge(original, &settings()).unwrap();
        assert!(merged.comments_kept);
        assert!(
            merged
                .text
                .contains("broker = \"mqtts://broker.example:8883\" # old\n")
        );
    }

    #[test]
    fn a_layout_the_line_editor_cannot_handle_falls_back_to_a_rewrite() {
        // An inline table: appending [sync] would define it twice.
        let original = "# gone after the rewrite\nsync = { broker = \"mqtt://old:1883\" }\n";
        let merged = merge(original, &settings()).unwrap();
        assert!(!merged.comments_kept);
        let table: toml::Table = merged.text.parse().unwrap();
        assert_eq!(
            table["sync"]["broker"].as_str(),
            Some("mqtts://broker.example:8883")
        );
        assert_eq!(table["agent"]["id"].as_str(), Some("store-0042/till-1"));
    }

    #[test]
    fn a_file_that_is_not_toml_is_refused() {
        assert!(merge("[agent\nid = 1\n", &settings()).is_err());
        assert!(merge("sync = 5\n", &settings()).is_err());
    }
}
