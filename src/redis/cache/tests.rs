//! The cache's entries: bounded as configured.

use std::{collections::HashMap, sync::Arc, time::UNIX_EPOCH};

use super::entries;
use crate::store::Record;

fn record() -> Arc<Record> {
    Arc::new(Record::new(HashMap::new(), UNIX_EPOCH, UNIX_EPOCH))
}

#[test]
fn the_entries_never_hold_more_than_max_entries() {
    for max in [0, 1, 10, 1_000] {
        let entries = entries(max);
        for i in 0..5 * max + 20 {
            entries.insert(format!("id-{i}"), record());
            assert!(
                entries.len() as u64 <= max,
                "{} entries held, at most {max} allowed",
                entries.len()
            );
        }
    }
}

#[test]
fn an_entry_is_found_until_removed_or_cleared() {
    let entries = entries(100);
    entries.insert("a".to_owned(), record());
    entries.insert("b".to_owned(), record());
    assert!(entries.contains_key("a") && entries.get("a").is_some());
    entries.remove("a");
    assert!(!entries.contains_key("a") && entries.get("a").is_none());
    assert!(entries.get("b").is_some());
    entries.clear();
    assert_eq!(entries.len(), 0);
}
