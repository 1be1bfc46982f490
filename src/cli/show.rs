//! What each admin answer looks like to people: the status at a glance, sync runs and
//! their sources, bindings, invites, the outbox, search hits. Each function takes the
//! answer's JSON as the admin API gives it (the same document `--json` prints) and
//! writes text to standard output; failures of a sync run go to standard error, first.

use super::human::{self, count, count_of, duration_ms, fields, text, time_or, Table};
use crate::outln;
use serde_json::Value;

fn array(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// `mxisd status`: the headline first (what `| head -1` keeps), then each part.
pub fn status(b: &Value) {
    let health = text(&b["status"]["health"], "UNKNOWN");
    outln!(
        "mxisd {} serving {}: {health}",
        text(&b["version"], "?"),
        text(&b["server_name"], "?")
    );
    let store = &b["store"];
    let store_line = if store["ok"] == true {
        let mut parts = vec![format!("schema {}", store["schema_version"])];
        if let Some(size) = store["size_on_disk"].as_u64() {
            parts.push(human::bytes(size));
        }
        if let Some(created) = store["created_at_ms"].as_u64() {
            parts.push(format!("created {}", human::local_time(created)));
        }
        format!("ok: {}", parts.join(", "))
    } else {
        format!("FAILING: {}", text(&store["error"], "no reason given"))
    };
    let index = &b["index"];
    let index_line = format!(
        "{}{}",
        count_of(&index["entries"], "entry"),
        if index["stale"] == true {
            " (behind the store: rebuilt by the next sync run, or `mxisd reindex`)"
        } else {
            ""
        }
    );
    let outbox = &b["outbox"];
    let mut outbox_line = format!(
        "{} pending, {} failed",
        outbox["pending"].as_u64().unwrap_or(0),
        outbox["failed"].as_u64().unwrap_or(0)
    );
    if let Some(oldest) = outbox["oldest_pending_ms"].as_u64() {
        outbox_line.push_str(&format!(" (oldest queued {})", human::local_time(oldest)));
    }
    if let Some(e) = outbox["error"].as_str() {
        outbox_line = format!("cannot be read: {e}");
    }
    fields(&[
        ("public URL", text(&b["public_url"], "?").to_owned()),
        (
            "up for",
            human::uptime(b["uptime_seconds"].as_u64().unwrap_or(0)),
        ),
        ("signing key", text(&b["key_id"], "?").to_owned()),
        (
            "lookup pepper",
            format!("generation {}", b["pepper_generation"]),
        ),
        ("state", text(&b["storage_path"], "?").to_owned()),
        ("store", store_line),
        (
            "lookups",
            match store["lookup_table_state"].as_str() {
                Some("ready") => format!(
                    "from memory ({})",
                    count_of(&store["lookup_table"], "binding")
                ),
                Some("building") => {
                    "from the store (the in-memory table is being built)".to_owned()
                }
                _ => "from the store (the in-memory table is off: see the log)".to_owned(),
            },
        ),
        ("search index", index_line),
        ("outbox", outbox_line),
    ]);
    let sources = array(&b["sync"]);
    if !sources.is_empty() {
        outln!("");
        let mut t = Table::new(&SOURCE_COLUMNS);
        for s in sources {
            t.row(source_cells(s));
        }
        t.print();
    }
    let problems = array(&b["problems"]);
    if !problems.is_empty() {
        outln!("");
        outln!("needs attention:");
        for p in problems {
            outln!("  - {}", text(p, "?"));
        }
    }
}

/// A 3PID's bindings, after `verb` (`bound`, `removed`) when it was changed.
pub fn binding(b: &Value, verb: Option<&str>) {
    let threepid = format!("{} {}", text(&b["medium"], "?"), text(&b["address"], "?"));
    if let Some(verb) = verb {
        outln!("{verb} {threepid}");
    }
    match b["effective"]["mxid"].as_str() {
        Some(mxid) => outln!(
            "lookups of {threepid} answer {mxid} (origin {})",
            text(&b["effective"]["origin"], "?")
        ),
        None => outln!("lookups of {threepid} answer nothing: it is not bound"),
    }
    let entries = array(&b["entries"]);
    if !entries.is_empty() {
        let mut t = Table::new(&["ORIGIN", "MATRIX ID", "SINCE", "VALID UNTIL"]);
        for e in entries {
            t.row(vec![
                text(&e["origin"], "?").to_owned(),
                text(&e["mxid"], "?").to_owned(),
                time_or(&e["updated_ms"], "?"),
                time_or(&e["not_after"], "?"),
            ]);
        }
        t.print();
    }
}

/// The one line of a finished import (bad lines, at most the first hundred, on
/// standard error before it).
pub fn import(report: &Value, from: &str, took: std::time::Duration) {
    for e in array(&report["errors"]) {
        eprintln!("  {}", text(e, ""));
    }
    let lines = report["lines"].as_u64().unwrap_or(0);
    outln!(
        "imported {} from {from} in {} ({}, {} skipped)",
        count_of(&report["imported"], "binding"),
        duration_ms(took.as_millis() as u64),
        count(lines, "line"),
        report["skipped"].as_u64().unwrap_or(0)
    );
}

/// `mxisd invites list`
pub fn invites(b: &Value) {
    let list = array(&b["invites"]);
    if list.is_empty() {
        outln!("no pending invites");
        return;
    }
    let mut t = Table::new(&["TOKEN", "TO", "ROOM", "FROM", "CREATED", "EXPIRES"]);
    for i in list {
        t.row(vec![
            text(&i["token"], "?").to_owned(),
            format!("{} {}", text(&i["medium"], "?"), text(&i["address"], "?")),
            text(&i["room_id"], "?").to_owned(),
            text(&i["sender"], "?").to_owned(),
            time_or(&i["created_ms"], "?"),
            time_or(&i["expires_ms"], "never"),
        ]);
    }
    t.print();
    outln!("{}", count(list.len() as u64, "pending invite"));
}

/// `mxisd invites show TOKEN`
pub fn invite(i: &Value) {
    let mut pairs = vec![
        ("token", text(&i["token"], "?").to_owned()),
        (
            "to",
            format!("{} {}", text(&i["medium"], "?"), text(&i["address"], "?")),
        ),
        ("room", text(&i["room_id"], "?").to_owned()),
        ("from", text(&i["sender"], "?").to_owned()),
        ("created", time_or(&i["created_ms"], "?")),
        ("expires", time_or(&i["expires_ms"], "never")),
    ];
    if let Some(details) = i["details"].as_object() {
        for (k, v) in details {
            pairs.push((k.as_str(), text(v, "").to_owned()));
        }
    }
    fields(&pairs);
}

/// `mxisd outbox`
pub fn outbox(b: &Value) {
    let pending = array(&b["pending"]);
    let failed = array(&b["failed"]);
    if pending.is_empty() && failed.is_empty() {
        outln!("the outbox is empty: every onbind delivery went through");
        return;
    }
    for (title, items, next) in [
        ("pending", pending, true),
        ("failed for good", failed, false),
    ] {
        if items.is_empty() {
            continue;
        }
        outln!("{} {title}:", count(items.len() as u64, "delivery"));
        let mut t = Table::new(&[
            "FOR",
            "TO",
            "ATTEMPTS",
            if next { "NEXT ATTEMPT" } else { "QUEUED" },
            "LAST ERROR",
        ]);
        for i in items {
            t.row(vec![
                text(&i["mxid"], "?").to_owned(),
                text(&i["destination"], "?").to_owned(),
                i["attempts"].as_u64().unwrap_or(0).to_string(),
                if next {
                    time_or(&i["next_attempt_ms"], "?")
                } else {
                    time_or(&i["created_ms"], "?")
                },
                text(&i["last_error"], "").to_owned(),
            ]);
        }
        t.print();
    }
    if !failed.is_empty() {
        outln!("`mxisd outbox --retry` puts the failed ones back in line");
    }
}

/// `mxisd search TERM`
pub fn search(b: &Value) {
    let hits = array(&b["results"]);
    if hits.is_empty() {
        outln!("no matches");
        return;
    }
    let mut t = Table::new(&["USER", "DISPLAY NAME"]);
    for h in hits {
        t.row(vec![
            text(&h["user_id"], "?").to_owned(),
            text(&h["display_name"], "").to_owned(),
        ]);
    }
    t.print();
    if b["limited"] == true {
        outln!("(more match: raise --limit)");
    }
}

/// A source's state word as the server gives it (`ok`, `failing`, `degraded`), or
/// `never run` for a source with no run yet.
fn state(s: &Value) -> &str {
    s["state"].as_str().unwrap_or("never run")
}

/// The cells every table of sources starts with: SOURCE, STATE, LAST SUCCESS, USERS,
/// BINDINGS, TOOK.
fn source_cells(s: &Value) -> Vec<String> {
    let state = state(s);
    vec![
        text(&s["source"], "?").to_owned(),
        state.to_owned(),
        time_or(&s["last_success_ms"], "never"),
        s["users"].as_u64().unwrap_or(0).to_string(),
        s["bindings"].as_u64().unwrap_or(0).to_string(),
        match s["duration_ms"].as_u64() {
            Some(ms) if state != "never run" => duration_ms(ms),
            _ => "-".to_owned(),
        },
    ]
}

const SOURCE_COLUMNS: [&str; 6] = [
    "SOURCE",
    "STATE",
    "LAST SUCCESS",
    "USERS",
    "BINDINGS",
    "TOOK",
];

/// `mxisd sync status`
pub fn sync_status(b: &Value) {
    let sources = array(&b["sources"]);
    if sources.is_empty() {
        outln!("no identity source is configured");
        return;
    }
    let mut columns = SOURCE_COLUMNS.to_vec();
    columns.push("NEXT RUN");
    let mut t = Table::new(&columns);
    for s in sources {
        let mut cells = source_cells(s);
        cells.push(time_or(&s["next_run_ms"], "-"));
        t.row(cells);
    }
    t.print();
    for s in sources.iter().filter(|s| state(s) == "failing") {
        outln!(
            "{}: the run of {} failed: {}",
            text(&s["source"], "?"),
            time_or(&s["last_attempt_ms"], "?"),
            text(&s["last_error"], "?")
        );
    }
    for s in sources.iter().filter(|s| state(s) == "degraded") {
        outln!(
            "{}: degraded: {}",
            text(&s["source"], "?"),
            text(&s["reason"], "?")
        );
    }
}

/// The runs of `mxisd sync`: failures first, on standard error, with their new reason
/// and the last good run they left in place (its counts are not this run's); then what
/// each successful run did. `print`: false for `--json` (only the verdict is wanted).
/// `error`: the server's own refusal, already shown. True when every source ran.
pub fn sync_run(b: &Value, print: bool, error: Option<&str>) -> bool {
    let sources = array(&b["sources"]);
    let failed: Vec<&Value> = sources.iter().filter(|s| state(s) == "failing").collect();
    if print {
        for s in &failed {
            let name = text(&s["source"], "?");
            let why = text(&s["last_error"], "no reason given");
            if !error.is_some_and(|e| e.contains(why)) {
                if why.starts_with("refused") {
                    eprintln!("error: sync of {name} {why}");
                } else {
                    eprintln!("error: sync of {name} failed: {why}");
                }
            }
            match s["last_success_ms"].as_u64() {
                Some(at) => eprintln!(
                    "  nothing changed: {name} still serves its last good run, of {} ({}, {})",
                    human::local_time(at),
                    count_of(&s["users"], "user"),
                    count_of(&s["bindings"], "binding")
                ),
                None => eprintln!("  nothing changed: {name} has never synced successfully"),
            }
        }
        for s in sources.iter().filter(|s| state(s) != "failing") {
            let changes = ["added", "changed", "removed"]
                .iter()
                .map(|k| s[*k].as_u64().unwrap_or(0))
                .collect::<Vec<_>>();
            let what = if changes.iter().all(|n| *n == 0) {
                "no change".to_owned()
            } else {
                format!(
                    "{} added, {} changed, {} removed",
                    changes[0], changes[1], changes[2]
                )
            };
            outln!(
                "{}: {}, {} ({what}) in {}",
                text(&s["source"], "?"),
                count_of(&s["users"], "user"),
                count_of(&s["bindings"], "binding"),
                duration_ms(s["duration_ms"].as_u64().unwrap_or(0))
            );
            let skipped = s["skipped"].as_u64().unwrap_or(0);
            if skipped > 0 {
                outln!("  skipped {}", count(skipped, "entry"));
            }
            for p in array(&s["problems"]) {
                outln!("  - {}", text(p, ""));
            }
            if state(s) == "degraded" {
                outln!("  degraded: {}", text(&s["reason"], "?"));
            }
        }
        if sources.is_empty() && error.is_none() {
            outln!("no identity source is configured");
        }
    }
    failed.is_empty()
}
