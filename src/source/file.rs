//! A `file` source's document: a YAML (or JSON) list of users, read in pieces so a big
//! directory costs about the size of its users, not of the YAML parser's event list
//! (serde_yaml keeps every event of a document in memory: a 17 MB file of 100k users
//! took 400 MB to parse whole). Must not touch the store: it only reads text.

use super::{Fetched, PACE_STEP};
use crate::config::stores::UserSpec;
use crate::pace::Pacer;

/// An empty document (a file truncated, or written by a job that failed) is not
/// "nobody": no users at all is written `[]`.
const EMPTY: &str = "is empty: a file source lists its users (write [] for none)";

/// A `file` source's document: its users, or what is wrong with it (after its path).
/// Read in pieces, paced by `pacer` between every [`PACE_STEP`] of them.
pub(super) fn parse(text: &str, pacer: &Pacer) -> Result<Fetched, String> {
    if text.trim().is_empty() {
        return Err(EMPTY.into());
    }
    if let Some(users) = in_pieces(text, pacer) {
        return Ok(users.into());
    }
    match serde_yaml_ng::from_str::<Option<Vec<UserSpec>>>(text) {
        Ok(Some(users)) => Ok(users.into()),
        Ok(None) => Err(EMPTY.into()),
        Err(e) => {
            // Positions only: serde's messages can quote values (addresses).
            let at = e
                .location()
                .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
                .unwrap_or_default();
            Err(format!("is not a list of users{at}"))
        }
    }
}

/// Whether a line starts an item of a block sequence at column 0 (`- ...` or `-`).
fn starts_item(line: &str) -> bool {
    let line = line.trim_end_matches(['\n', '\r']);
    line == "-" || line.starts_with("- ")
}

/// Whether a line is nothing to a parser (blank, a comment, a document start).
fn is_nothing(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#') || t == "---"
}

/// The users of a JSON array, or of a YAML block sequence at column 0 parsed one item at
/// a time (each item's lines up to the next line starting with `- `, where libyaml ends
/// the item too). `None` when the document is anything else, or when a piece does not
/// parse alone (an alias of another item's anchor, a second document, a mistake): the
/// caller then parses it whole, for the same answer or the error's true position.
fn in_pieces(text: &str, pacer: &Pacer) -> Option<Vec<UserSpec>> {
    let body = text.trim_start_matches('\u{feff}');
    if body.trim_start().starts_with('[') {
        return serde_json::from_str(body).ok();
    }
    let mut users = Vec::new();
    let mut piece_start = None;
    let mut at = 0;
    for line in body.split_inclusive('\n') {
        if starts_item(line) {
            if let Some(start) = piece_start {
                parse_piece(&body[start..at], &mut users)?;
                if users.len() % PACE_STEP == 0 {
                    pacer.pause_blocking();
                }
            }
            piece_start = Some(at);
        } else if piece_start.is_none() && !is_nothing(line) {
            return None;
        }
        at += line.len();
    }
    parse_piece(&body[piece_start?..], &mut users)?;
    Some(users)
}

fn parse_piece(piece: &str, users: &mut Vec<UserSpec>) -> Option<()> {
    let item: Vec<UserSpec> = serde_yaml_ng::from_str(piece).ok()?;
    users.extend(item);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::{in_pieces as pieces, parse as parse_paced};
    use crate::pace::Pacer;

    fn parse(text: &str) -> Result<super::Fetched, String> {
        parse_paced(text, &Pacer::default())
    }

    fn in_pieces(text: &str) -> Option<Vec<UserSpec>> {
        pieces(text, &Pacer::default())
    }
    use crate::config::stores::UserSpec;

    #[test]
    fn an_empty_file_document_is_an_error_and_an_empty_list_is_not() {
        for empty in ["", "  \n\t\n", "# nobody yet\n", "null", "~\n", "---\n"] {
            let err = parse(empty).err().unwrap_or_else(|| panic!("{empty:?}"));
            assert!(err.contains("is empty"), "{empty:?}: {err}");
        }
        for wrong in ["{}", "nope: [", "3"] {
            let err = parse(wrong).err().unwrap_or_else(|| panic!("{wrong:?}"));
            assert!(err.contains("not a list of users"), "{wrong:?}: {err}");
        }
        assert!(parse("[]\n").unwrap().users.is_empty());
        let one = parse("- username: a\n").unwrap();
        assert_eq!(one.users.len(), 1);
    }

    /// Every shape of item YAML allows, read in pieces exactly as whole.
    #[test]
    fn pieces_read_what_the_whole_document_says() {
        let doc = "\u{feff}# staff\n---\n\
            - username: alice\n  displayName: \"Alice\n    Liddell\"\n  threepids:\n    - medium: email\n      address: alice@example.org\n\
            # between items\n\n\
            - {username: bob, threepids: [{medium: msisdn, address: '+1 202 555 0100'}]}\n\
            -\n  username: carol\n  attributes:\n    title:\n      - |\n        Head of\n        - not an item\n  roles: [a, b]\n\
            - username: \"dave\"   # trailing comment\r\n  displayName: >-\n    Dave\n    Jones\r\n\
            - username: eve\n";
        let whole: Vec<UserSpec> =
            serde_yaml_ng::from_str(doc.trim_start_matches('\u{feff}')).unwrap();
        assert_eq!(whole.len(), 5);
        assert_eq!(in_pieces(doc), Some(whole.clone()));
        assert_eq!(parse(doc).unwrap().users, whole);
        assert_eq!(
            whole[2].attributes.get("title"),
            Some(&["Head of\n- not an item\n".to_owned()][..])
        );
        // JSON, as the same list.
        let json = serde_json::to_string(&whole).unwrap();
        assert_eq!(in_pieces(&json), Some(whole));
    }

    /// What pieces cannot read alone is read whole: the same users, or the same error
    /// at the same position.
    #[test]
    fn what_pieces_cannot_read_is_read_whole() {
        let aliased = "- username: a\n  roles: &staff [x, y]\n- username: b\n  roles: *staff\n";
        assert_eq!(in_pieces(aliased), None);
        let users = parse(aliased).unwrap().users;
        assert_eq!(users[1].roles, vec!["x".to_owned(), "y".to_owned()]);
        for (doc, line) in [
            ("- username: a\n- username: b\n  nope: 1\n", Some(3)),
            ("- username: a\n---\n- username: b\n", None),
            ("users:\n  - username: a\n", Some(1)),
            ("- username: a\n  threepids: [\n", Some(3)),
        ] {
            assert_eq!(in_pieces(doc), None, "{doc:?}");
            let err = parse(doc).err().unwrap_or_else(|| panic!("{doc:?}"));
            assert!(err.starts_with("is not a list of users"), "{doc:?}: {err}");
            if let Some(line) = line {
                assert!(err.contains(&format!("(line {line},")), "{doc:?}: {err}");
            }
        }
    }
}
