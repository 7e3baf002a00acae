//! `meridian kv export|import`: keys to and from files.
//!
//! Formats:
//! - `json`: Consul's `consul kv export` format, an array of
//!   `{"key", "flags", "value" (base64)}` with full keys (an import prefix
//!   is put in front);
//! - `yaml`: nested mappings, one level per `/`-separated key segment below
//!   the prefix (sequences become segments `0`, `1`, ...); scalars become
//!   their text; flags are not kept;
//! - `properties`: Java `.properties`, one `name=value` line per key below
//!   the prefix, the rest of the key (slashes included) as the name.
//!
//! Parsing and rendering are pure; the command compares with the node and
//! writes only what differs (or, with `--dry-run`, shows it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use base64::Engine;
use bytes::Bytes;
use clap::ValueEnum;
use hyper::Method;
use meridian::client::{encode_path, Client};
use serde_json::{json, Value};
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

/// Largest file `kv import` reads.
pub const IMPORT_BYTES_MAX: u64 = 64 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Yaml,
    Properties,
}

impl Format {
    /// From a file name's extension.
    pub fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "json" => Some(Format::Json),
            "yaml" | "yml" => Some(Format::Yaml),
            "properties" => Some(Format::Properties),
            _ => None,
        }
    }
}

/// One key to write: full key, value, flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub key: String,
    pub value: Vec<u8>,
    pub flags: u64,
}

/// A prefix as a directory: `app` and `app/` both mean the keys under `app/`.
fn dir(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    }
}

fn join(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        format!("{prefix}{rest}")
    } else {
        format!("{prefix}/{rest}")
    }
}

// -------------------------------------------------------------------- JSON

pub fn parse_json(text: &str, prefix: &str) -> Result<Vec<Item>> {
    let v: Value = serde_json::from_str(text).context("not valid JSON")?;
    let Some(list) = v.as_array() else {
        bail!("expected a JSON array of {{\"key\", \"flags\", \"value\"}} (consul kv export)");
    };
    let mut out = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let key = e["key"]
            .as_str()
            .with_context(|| format!("entry {i} has no \"key\" string"))?;
        let value = match &e["value"] {
            Value::Null => Vec::new(),
            Value::String(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .with_context(|| format!("entry {i} ({key}): \"value\" is not base64"))?,
            _ => bail!("entry {i} ({key}): \"value\" must be a base64 string"),
        };
        let flags = match &e["flags"] {
            Value::Null => 0,
            f => f.as_u64().with_context(|| {
                format!("entry {i} ({key}): \"flags\" must be an unsigned integer")
            })?,
        };
        out.push(Item {
            key: join(prefix, key),
            value,
            flags,
        });
    }
    Ok(out)
}

pub fn render_json(items: &[Item]) -> String {
    let list: Vec<Value> = items
        .iter()
        .map(|i| {
            json!({
                "key": i.key,
                "flags": i.flags,
                "value": base64::engine::general_purpose::STANDARD.encode(&i.value),
            })
        })
        .collect();
    serde_json::to_string_pretty(&list).unwrap_or_default() + "\n"
}

// -------------------------------------------------------------------- YAML

fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        Yaml::Null => Some(String::new()),
        _ => None,
    }
}

fn flatten(y: &Yaml, path: &str, out: &mut Vec<Item>) -> Result<()> {
    match y {
        Yaml::Hash(h) => {
            for (k, v) in h {
                let k = scalar(k)
                    .with_context(|| format!("a mapping key under {path:?} is not a scalar"))?;
                if k.is_empty() || k.contains('/') {
                    bail!("mapping key {k:?} under {path:?} is empty or holds a '/'");
                }
                flatten(v, &join(path, &k), out)?;
            }
        }
        Yaml::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                flatten(v, &join(path, &i.to_string()), out)?;
            }
        }
        Yaml::Alias(_) | Yaml::BadValue => bail!("unsupported YAML value at {path:?}"),
        s => {
            if path.is_empty() {
                bail!("the YAML document is a scalar, not a mapping");
            }
            out.push(Item {
                key: path.to_string(),
                value: scalar(s).unwrap_or_default().into_bytes(),
                flags: 0,
            });
        }
    }
    Ok(())
}

pub fn parse_yaml(text: &str, prefix: &str) -> Result<Vec<Item>> {
    let docs =
        YamlLoader::load_from_str(text).map_err(|e| anyhow::anyhow!("not valid YAML: {e}"))?;
    let mut out = Vec::new();
    for d in &docs {
        flatten(d, prefix.trim_end_matches('/'), &mut out)?;
    }
    Ok(out)
}

/// Nested mappings of the keys below `prefix`; a key that is both a value
/// and a prefix of others cannot be written as YAML.
pub fn render_yaml(items: &[Item], prefix: &str) -> Result<String> {
    #[derive(Default)]
    struct Node {
        value: Option<String>,
        children: BTreeMap<String, Node>,
    }
    let mut root = Node::default();
    for i in items {
        let Some(rest) = i.key.strip_prefix(&dir(prefix)) else {
            continue;
        };
        let value = String::from_utf8(i.value.clone())
            .with_context(|| format!("{} is not UTF-8 text: export it as json", i.key))?;
        let mut n = &mut root;
        for seg in rest.split('/') {
            if seg.is_empty() {
                bail!("{} has an empty path segment: export it as json", i.key);
            }
            n = n.children.entry(seg.to_string()).or_default();
        }
        n.value = Some(value);
    }
    fn to_yaml(n: &Node, path: &str) -> Result<Yaml> {
        if n.children.is_empty() {
            return Ok(Yaml::String(n.value.clone().unwrap_or_default()));
        }
        if n.value.is_some() {
            bail!(
                "{path} is both a key and a prefix of other keys: export it as json or properties"
            );
        }
        let mut h = yaml_rust2::yaml::Hash::new();
        for (k, c) in &n.children {
            h.insert(Yaml::String(k.clone()), to_yaml(c, &join(path, k))?);
        }
        Ok(Yaml::Hash(h))
    }
    if root.children.is_empty() {
        return Ok("{}\n".to_string());
    }
    let doc = to_yaml(&root, prefix)?;
    let mut out = String::new();
    YamlEmitter::new(&mut out)
        .dump(&doc)
        .map_err(|e| anyhow::anyhow!("cannot write YAML: {e:?}"))?;
    out.push('\n');
    Ok(out)
}

// -------------------------------------------------------------- properties

fn unescape(s: &str) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let mut code = u32::from_str_radix(&hex, 16)
                    .with_context(|| format!("bad \\u escape \\u{hex}"))?;
                // A high surrogate takes the low one that follows (Java writes pairs).
                if (0xD800..0xDC00).contains(&code) {
                    let rest: String = chars.clone().take(6).collect();
                    let low = rest
                        .strip_prefix("\\u")
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .filter(|l| (0xDC00..0xE000).contains(l))
                        .with_context(|| format!("\\u{hex} is a lone surrogate"))?;
                    chars.nth(5);
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                }
                out.push(char::from_u32(code).with_context(|| format!("bad \\u escape \\u{hex}"))?);
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(out)
}

fn escape(s: &str, key: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '=' | ':' | ' ' if key => {
                out.push('\\');
                out.push(c);
            }
            '#' | '!' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == 0 => out.push_str("\\ "),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

pub fn parse_properties(text: &str, prefix: &str) -> Result<Vec<Item>> {
    let mut out = Vec::new();
    let mut logical = String::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        let line = line.trim_start_matches([' ', '\t', '\x0c']);
        if logical.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!'))
        {
            continue;
        }
        // A line ending in an odd number of backslashes continues.
        let trailing = line.len() - line.trim_end_matches('\\').len();
        if trailing % 2 == 1 {
            logical.push_str(&line[..line.len() - 1]);
            if lines.peek().is_some() {
                continue;
            }
        } else {
            logical.push_str(line);
        }
        let l = std::mem::take(&mut logical);
        // The name ends at the first unescaped '=', ':' or whitespace.
        let mut end = l.len();
        let mut escaped = false;
        for (i, c) in l.char_indices() {
            if escaped {
                escaped = false;
                continue;
            }
            match c {
                '\\' => escaped = true,
                '=' | ':' | ' ' | '\t' => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let name = unescape(&l[..end]).with_context(|| format!("line {}", n + 1))?;
        let mut rest = l[end..].trim_start_matches([' ', '\t']);
        if let Some(r) = rest.strip_prefix(['=', ':']) {
            rest = r.trim_start_matches([' ', '\t']);
        }
        let value = unescape(rest).with_context(|| format!("line {}", n + 1))?;
        if name.is_empty() {
            bail!("line {}: a property without a name", n + 1);
        }
        out.push(Item {
            key: join(prefix, &name),
            value: value.into_bytes(),
            flags: 0,
        });
    }
    Ok(out)
}

pub fn render_properties(items: &[Item], prefix: &str) -> Result<String> {
    let mut out = String::new();
    for i in items {
        let Some(name) = i.key.strip_prefix(&dir(prefix)) else {
            continue;
        };
        let value = std::str::from_utf8(&i.value)
            .with_context(|| format!("{} is not UTF-8 text: export it as json", i.key))?;
        out.push_str(&escape(name, true));
        out.push('=');
        out.push_str(&escape(value, false));
        out.push('\n');
    }
    Ok(out)
}

// ---------------------------------------------------------------- commands

async fn current(client: &Client, prefix: &str) -> Result<Vec<Item>> {
    let list = client
        .kv_list(prefix)
        .await
        .with_context(|| format!("reading {prefix:?}"))?;
    Ok(list
        .into_iter()
        .map(|e| Item {
            key: e.key,
            value: e.value.to_vec(),
            flags: e.flags,
        })
        .collect())
}

pub async fn export(
    client: &Client,
    prefix: &str,
    format: Option<Format>,
    out: Option<PathBuf>,
) -> Result<bool> {
    let format = format
        .or_else(|| out.as_deref().and_then(Format::of))
        .unwrap_or(Format::Json);
    // Keys under the prefix as a directory: `app` does not take `application/x`.
    let items = current(client, &dir(prefix)).await?;
    let text = match format {
        Format::Json => render_json(&items),
        Format::Yaml => render_yaml(&items, prefix)?,
        Format::Properties => render_properties(&items, prefix)?,
    };
    match out {
        Some(path) => {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("exported {} keys to {}", items.len(), path.display());
        }
        None => print!("{text}"),
    }
    Ok(true)
}

pub async fn import(
    client: &Client,
    file: &Path,
    prefix: &str,
    format: Option<Format>,
    dry_run: bool,
) -> Result<bool> {
    let format = format
        .or_else(|| Format::of(file))
        .context("cannot tell the format from the file name: give --format json|yaml|properties")?;
    let len = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    if len > IMPORT_BYTES_MAX {
        bail!(
            "{} is {len} bytes, more than the import limit of {IMPORT_BYTES_MAX}",
            file.display()
        );
    }
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading {} as UTF-8", file.display()))?;
    let items = match format {
        Format::Json => parse_json(&text, prefix),
        Format::Yaml => parse_yaml(&text, prefix),
        Format::Properties => parse_properties(&text, prefix),
    }
    .with_context(|| format!("{} is not a valid {format:?} file", file.display()))?;
    // Compare with what the node holds under the common prefix.
    let have: BTreeMap<String, Item> = current(client, &dir(prefix))
        .await?
        .into_iter()
        .map(|i| (i.key.clone(), i))
        .collect();
    let mut wanted: BTreeMap<String, Item> = BTreeMap::new();
    for i in items {
        wanted.insert(i.key.clone(), i);
    }
    let (mut add, mut change, mut same) = (Vec::new(), Vec::new(), 0usize);
    for (k, i) in &wanted {
        match have.get(k) {
            None => add.push(i),
            Some(h) if h.value != i.value || (format == Format::Json && h.flags != i.flags) => {
                change.push(i)
            }
            Some(_) => same += 1,
        }
    }
    let show = |v: &[u8]| {
        let s = String::from_utf8_lossy(v);
        let mut t: String = s.chars().take(60).collect();
        if s.chars().count() > 60 {
            t.push('…');
        }
        format!("{t:?}")
    };
    for i in &add {
        println!("+ {} = {}", i.key, show(&i.value));
    }
    for i in &change {
        let old = have.get(&i.key).map(|h| show(&h.value)).unwrap_or_default();
        println!("~ {} = {} (was {old})", i.key, show(&i.value));
    }
    println!(
        "{}{} to add, {} to change, {same} unchanged",
        if dry_run { "dry run: " } else { "" },
        add.len(),
        change.len()
    );
    if dry_run {
        return Ok(true);
    }
    for i in add.iter().chain(change.iter()) {
        let mut path = format!("/v1/kv/{}", encode_path(&i.key));
        if format == Format::Json {
            path.push_str(&format!("?flags={}", i.flags));
        }
        let r = client
            .request(Method::PUT, &path, Bytes::from(i.value.clone()))
            .await?;
        if !r.status.is_success() {
            bail!(
                "writing {}: {} {}",
                i.key,
                r.status.as_u16(),
                r.error_message()
            );
        }
    }
    println!("imported {} keys", add.len() + change.len());
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(list: &[(&str, &str)]) -> Vec<Item> {
        list.iter()
            .map(|(k, v)| Item {
                key: k.to_string(),
                value: v.as_bytes().to_vec(),
                flags: 0,
            })
            .collect()
    }

    #[test]
    fn json_round_trip_keeps_flags_and_bytes() {
        let mut v = items(&[("app/a", "1"), ("app/b", "")]);
        v[0].flags = 42;
        v.push(Item {
            key: "app/bin".into(),
            value: vec![0, 255, 1],
            flags: 0,
        });
        assert_eq!(parse_json(&render_json(&v), "").unwrap(), v);
        let moved = parse_json(&render_json(&v), "copy").unwrap();
        assert_eq!(moved[0].key, "copy/app/a");
    }

    #[test]
    fn yaml_flattens_and_round_trips() {
        let text =
            "db:\n  host: db1\n  port: 5432\nfeatures:\n  - search\n  - \"true\"\nempty: ~\n";
        let got = parse_yaml(text, "app").unwrap();
        assert_eq!(
            got,
            items(&[
                ("app/db/host", "db1"),
                ("app/db/port", "5432"),
                ("app/features/0", "search"),
                ("app/features/1", "true"),
                ("app/empty", ""),
            ])
        );
        let again = parse_yaml(&render_yaml(&got, "app").unwrap(), "app").unwrap();
        let mut a = again.clone();
        a.sort_by(|x, y| x.key.cmp(&y.key));
        let mut b = got.clone();
        b.sort_by(|x, y| x.key.cmp(&y.key));
        assert_eq!(a, b);
        assert!(render_yaml(&items(&[("p/a", "1"), ("p/a/b", "2")]), "p").is_err());
        assert!(parse_yaml("just a scalar", "").is_err());
        assert_eq!(
            parse_yaml("a scalar", "p").unwrap(),
            items(&[("p", "a scalar")])
        );
    }

    #[test]
    fn properties_parse_java_syntax_and_round_trip() {
        let text =
            "# comment\n! also\nurl = jdbc:pg://h/db\nname:Alice\nspaced value with spaces\n\
                    multi = one \\\n    two\nesc\\=key = a\\tb\\u0041\n";
        let got = parse_properties(text, "cfg").unwrap();
        assert_eq!(
            got,
            items(&[
                ("cfg/url", "jdbc:pg://h/db"),
                ("cfg/name", "Alice"),
                ("cfg/spaced", "value with spaces"),
                ("cfg/multi", "one two"),
                ("cfg/esc=key", "a\tbA"),
            ])
        );
        let back = parse_properties(&render_properties(&got, "cfg").unwrap(), "cfg").unwrap();
        assert_eq!(back, got);
        // Java's store() writes characters beyond the BMP as surrogate pairs.
        let emoji = parse_properties("e=\\uD83D\\uDE00!\n", "").unwrap();
        assert_eq!(emoji[0].value, "😀!".as_bytes());
        assert!(parse_properties("e=\\uD83D\n", "").is_err());
        // A name starting with a non-ASCII space keeps it.
        let nbsp = parse_properties("\u{a0}k=v\n", "").unwrap();
        assert_eq!(nbsp[0].key, "\u{a0}k");
    }
}
