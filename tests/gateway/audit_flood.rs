//! Unauthenticated callers cannot fill the disk through the audit trail (security review,
//! issue 14, item 6): 300 POSTs to a 60 000-character service id and 300 with a bad token
//! once took the database from 0.3 to 21 MB. Refusals before authentication are now counted
//! into a few aggregate rows, unknown service ids are not stored, and client text is bounded.

use std::time::{Duration, Instant};

use crate::common::{http, Gateway, KeyServer};
use bedside::store::Store;

#[tokio::test]
async fn a_flood_of_unauthenticated_refusals_adds_a_few_bounded_rows() {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let size = |p: &std::path::Path| {
        ["", "-wal"]
            .iter()
            .map(|s| {
                std::fs::metadata(format!("{}{s}", p.display()))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum::<u64>()
    };
    let before = size(&gw.db);
    let long = "A".repeat(60_000);
    let client = http();
    let mut unknown = 0;
    let mut unauthorized = 0;
    for i in 0..300 {
        let r = client
            .post(gw.service(&long))
            .json(&serde_json::json!({"hook": "patient-view"}))
            .send()
            .await
            .unwrap();
        if r.status() == 404 {
            unknown += 1;
        }
        let r = client
            .post(gw.service("deterioration"))
            .header("Authorization", format!("Bearer not.a.jwt{i}"))
            .json(&serde_json::json!({"hook": "patient-view"}))
            .send()
            .await
            .unwrap();
        if r.status() == 401 {
            unauthorized += 1;
        }
    }
    assert_eq!((unknown, unauthorized), (300, 300));

    // The aggregate rows are written within a flush period; wait for both kinds.
    let store = Store::open(&gw.db).await.unwrap();
    let waited = Instant::now();
    let rows = loop {
        let rows = store.audit_rows().await.unwrap();
        let calls: i64 = rows.iter().map(|r| r.calls).sum();
        if calls >= 600 {
            break rows;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "{calls} of 600 refusals audited after 60 s: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(rows.len() <= 8, "{} rows for 600 refusals", rows.len());
    assert_eq!(rows.iter().map(|r| r.calls).sum::<i64>(), 600, "{rows:?}");
    let unknown_row = rows
        .iter()
        .find(|r| r.outcome == "unknown_service")
        .expect("the unknown-service refusals are audited");
    assert_eq!(unknown_row.service_id, "(unknown)");
    assert_eq!(unknown_row.http_status, 404);
    assert!(rows
        .iter()
        .any(|r| r.http_status == 401 && r.service_id == "deterioration"));
    for r in &rows {
        assert!(!r.service_id.contains("AAAA"), "{r:?}");
    }
    let grown = size(&gw.db).saturating_sub(before);
    assert!(grown < 1_000_000, "the database grew by {grown} bytes");
    store.close().await;
    gw.stop().await;
}
