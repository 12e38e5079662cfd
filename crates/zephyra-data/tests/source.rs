//! The trainer's store source: a cursor as checkpoints written before the typed `Cursor` hold it resumes
//! the rows exactly; a cursor of another kind of source is refused.

mod common;

use common::*;
use zephyra_data::source::BufferedSource;
use zephyra_data::ActivationStore;
use zephyra_lm::HookPoint;
use zephyra_sae::train::{ActivationSource, Cursor};

#[test]
fn old_store_cursors_resume_the_same_rows() {
    let root = tempfile::tempdir().unwrap();
    let dir = tiny_store(root.path(), "store", vec![HookPoint::ResidPre(1)], 16);
    let open = || BufferedSource::store(ActivationStore::open(&dir).unwrap(), 100, 5, true);
    let d = 64;

    let mut a = open();
    let mut head = vec![0.0; 150 * d];
    assert_eq!(a.next_rows(&mut head).unwrap(), 150);
    let Cursor::Store {
        epoch,
        window,
        offset,
        ..
    } = a.cursor()
    else {
        panic!("a store source reports a store cursor: {}", a.cursor());
    };
    assert!(window > 0 && offset > 0, "mid-way through a later window");
    let mut rest = vec![0.0; 300 * d];
    assert_eq!(a.next_rows(&mut rest).unwrap(), 300);

    // Exactly the object the untyped code wrote: json!({kind, epoch, window, offset}) plus "path".
    let old = format!(
        r#"{{"kind":"store","epoch":{epoch},"window":{window},"offset":{offset},"path":{}}}"#,
        serde_json::to_string(&dir).unwrap()
    );
    let cursor: Cursor = serde_json::from_str(&old).unwrap();
    let mut b = open();
    b.seek(&cursor).unwrap();
    let mut again = vec![0.0; 300 * d];
    assert_eq!(b.next_rows(&mut again).unwrap(), 300);
    assert_eq!(again, rest);

    let stream: Cursor =
        serde_json::from_str(r#"{"kind":"stream","epoch":0,"window":1,"offset":3}"#).unwrap();
    let e = b.seek(&stream).unwrap_err().to_string();
    assert!(e.contains("not written by a `store` source"), "{e}");
}
