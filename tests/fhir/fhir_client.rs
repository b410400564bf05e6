//! The FHIR client against a real, independent FHIR R4 server process (sekmet-fhir): read,
//! search, paging, `_sort`, `_include`, date prefixes, POST `_search`, OperationOutcomes.

use std::time::{Duration, Instant};

use crate::common::fhir_server::{put_entry, FhirServer, FHIR_TOKEN};
use bedside::fhir::{EgressPolicy, FhirClient, FhirError, FhirSettings, OriginRule, Search};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};

fn client_for(server: &FhirServer, settings: FhirSettings) -> FhirClient {
    let rules = vec![OriginRule::parse(&server.origin()).unwrap()];
    FhirClient::new(settings, EgressPolicy::new(Vec::new(), rules)).unwrap()
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, hour, 0, 0).unwrap()
}

/// A patient with `n` heart-rate Observations one hour apart, loaded in scrambled order so
/// `_sort` has work to do.
async fn seed(server: &FhirServer, patient: &str, n: u32) {
    let mut entries = vec![put_entry(&json!({
        "resourceType": "Patient", "id": patient, "gender": "female"
    }))];
    for i in (0..n)
        .rev()
        .step_by(2)
        .chain((0..n).rev().skip(1).step_by(2))
    {
        entries.push(put_entry(&json!({
            "resourceType": "Observation", "id": format!("{patient}-hr-{i:02}"), "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": format!("Patient/{patient}")},
            "effectiveDateTime": at(i).to_rfc3339(),
            "valueQuantity": {"value": 70 + i, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
        })));
    }
    server
        .transaction(&json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
        .await;
}

/// Every entry's resource, in page order.
fn resources(pages: &[Box<serde_json::value::RawValue>]) -> Vec<Value> {
    pages
        .iter()
        .flat_map(|p| {
            let page: Value = serde_json::from_str(p.get()).unwrap();
            page["entry"].as_array().cloned().unwrap_or_default()
        })
        .collect()
}

fn ids_of(entries: &[Value], kind: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e["resource"]["resourceType"] == kind)
        .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn search_follows_next_links_across_pages_in_sort_order() {
    let server = FhirServer::start().await;
    seed(&server, "p1", 7).await;
    let client = client_for(&server, FhirSettings::default());
    let fhir = client
        .server(&server.base, (None, None), Some(FHIR_TOKEN), soon())
        .unwrap();
    let search = Search::new("Observation")
        .param("patient", "p1")
        .sort("-date")
        .count(2);
    let fetched = fhir.fetch(search.as_str()).await.unwrap();
    assert_eq!(fetched.pages.len(), 4, "7 results, 2 per page");
    assert_eq!(fetched.total, Some(7));
    assert_eq!(fetched.matches, 7);
    assert!(!fetched.truncated);
    let ids = ids_of(&resources(&fetched.pages), "Observation");
    let expected: Vec<String> = (0..7).rev().map(|i| format!("p1-hr-{i:02}")).collect();
    assert_eq!(ids, expected, "newest first across every page");
    let pages = client
        .metrics()
        .pages
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(pages, 4);
}

#[tokio::test]
async fn paging_stops_at_the_resource_cap() {
    let server = FhirServer::start().await;
    seed(&server, "p2", 9).await;
    let client = client_for(
        &server,
        FhirSettings {
            max_resources: 4,
            ..Default::default()
        },
    );
    let fhir = client
        .server(&server.base, (None, None), Some(FHIR_TOKEN), soon())
        .unwrap();
    let fetched = fhir
        .fetch(
            Search::new("Observation")
                .param("patient", "p2")
                .count(2)
                .as_str(),
        )
        .await
        .unwrap();
    assert!(fetched.truncated);
    assert_eq!(fetched.pages.len(), 2);
    assert_eq!(fetched.matches, 4);
}

#[tokio::test]
async fn include_date_prefixes_tokens_and_post_search() {
    let server = FhirServer::start().await;
    seed(&server, "p3", 6).await;
    let client = client_for(&server, FhirSettings::default());
    let fhir = client
        .server(&server.base, (None, None), Some(FHIR_TOKEN), soon())
        .unwrap();

    let with_patient = fhir
        .fetch(
            Search::new("Observation")
                .param("patient", "p3")
                .param("code", "http://loinc.org|8867-4")
                .date("date", "ge", at(3))
                .include("Observation:patient")
                .sort("date")
                .as_str(),
        )
        .await
        .unwrap();
    let entries = resources(&with_patient.pages);
    assert_eq!(
        ids_of(&entries, "Observation"),
        ["p3-hr-03", "p3-hr-04", "p3-hr-05"]
    );
    assert_eq!(ids_of(&entries, "Patient"), ["p3"]);
    assert_eq!((with_patient.matches, with_patient.includes), (3, 1));

    // The same search as POST [type]/_search, as a long query would be sent.
    let post_client = client_for(
        &server,
        FhirSettings {
            post_search_above: 10,
            ..Default::default()
        },
    );
    let posted = post_client
        .server(&server.base, (None, None), Some(FHIR_TOKEN), soon())
        .unwrap()
        .fetch(
            Search::new("Observation")
                .param("patient", "p3")
                .date("date", "lt", at(2))
                .sort("-date")
                .as_str(),
        )
        .await
        .unwrap();
    assert_eq!(
        ids_of(&resources(&posted.pages), "Observation"),
        ["p3-hr-01", "p3-hr-00"]
    );
}

#[tokio::test]
async fn reads_return_typed_resources_and_errors_carry_the_servers_operation_outcome() {
    let server = FhirServer::start().await;
    seed(&server, "p4", 1).await;
    let client = client_for(&server, FhirSettings::default());
    let fhir = client
        .server(&server.base, (None, None), Some(FHIR_TOKEN), soon())
        .unwrap();
    match fhir.read("Patient/p4").await.unwrap() {
        fhirbolt::model::r4::Resource::Patient(p) => {
            assert_eq!(p.id.and_then(|i| i.value).as_deref(), Some("p4"))
        }
        other => panic!("{other:?}"),
    }
    match fhir.read("Patient/nobody").await {
        Err(FhirError::Status {
            status: 404,
            outcome: Some(oo),
        }) => assert_eq!(oo.codes(), ["not-found"]),
        other => panic!("{other:?}"),
    }
    match fhir.fetch("Observation?patient=p4&_count=abc").await {
        Err(FhirError::Status {
            status: 400,
            outcome: Some(oo),
        }) => {
            assert!(oo.issues.iter().any(|i| i.severity == "error"), "{oo:?}");
        }
        other => panic!("{other:?}"),
    }
    // Without the token the server refuses; the client reports its status, no panic.
    let anonymous = client
        .server(&server.base, (None, None), None, soon())
        .unwrap();
    match anonymous.fetch("Patient/p4").await {
        Err(FhirError::Status { status, .. }) => assert!(status == 401 || status == 403),
        other => panic!("{other:?}"),
    }
}
