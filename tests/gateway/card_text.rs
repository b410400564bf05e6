//! Cards as a clinician reads them in an EHR sidebar (issue 14, item 4).
//!
//! Golden text: for each shipped service that shows a risk card, one fixed request (a synthetic
//! patient, times moved to now) → the card's summary, indicator, detail, suggestions and links,
//! compared with `tests/fixtures/cards/<service>.golden.md` (times masked as `<now>`). A change
//! of card wording shows up as a diff in review. Regenerate after an intended change with
//!
//! ```sh
//! BLESS=1 cargo test --test gateway card_text
//! ```
//!
//! Rendering: the same cards drawn the way the CDS Hooks sandbox draws them, in headless
//! Chromium at 240 px (1/8 of a 1920 px screen) and 320 px, must not scroll sideways, must
//! keep the detail short, and must show no UCUM codes or FHIR ids. Screenshots go to
//! `target/card-screenshots/` (not committed).

use crate::common;

use crate::common::{bearer, http, patient, repo, Gateway, Key, KeyServer};
use serde_json::{json, Value};

/// Services whose cards are checked; each gets its own request.
const SERVICES: &[&str] = &[
    "deterioration",
    "deterioration-encounter-start",
    "sepsis-screen",
    "aki-nephrotoxic",
    "aki-nephrotoxic-select",
];

/// At 320 px a card's detail stays within this many lines of text (the shipped cards: 20–23).
const MAX_DETAIL_LINES_320: u64 = 26;
/// At 240 px, the narrowest pane an EHR gives.
const MAX_DETAIL_LINES_240: u64 = 36;

const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";

/// The fixed request for `service`: the deteriorating demo patient, as each hook sends it.
fn request(service: &str) -> Value {
    let mut r = patient("deteriorating");
    let ibuprofen = json!({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
        "resourceType": "MedicationRequest", "id": "draft-ibuprofen", "status": "draft", "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "5640"}]},
        "subject": {"reference": "Patient/example"}}}]});
    match service {
        "deterioration-encounter-start" => {
            r["hook"] = "encounter-start".into();
            r["context"]["encounterId"] = "enc-1".into();
            r["prefetch"]["encounter"] = json!({"resourceType": "Encounter", "id": "enc-1", "status": "in-progress",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                "location": [{"location": {"display": "Ward 7"}}]});
        }
        "aki-nephrotoxic" => {
            r["hook"] = "order-sign".into();
            r["context"]["draftOrders"] = ibuprofen;
        }
        "aki-nephrotoxic-select" => {
            r["hook"] = "order-select".into();
            r["context"]["draftOrders"] = ibuprofen;
            r["context"]["selections"] = json!(["MedicationRequest/draft-ibuprofen"]);
        }
        _ => {}
    }
    r
}

/// The one card `service` answers `request` with.
async fn card(gw: &Gateway, service: &str) -> Value {
    let resp = http()
        .post(gw.service(service))
        .header("Authorization", bearer(service, Key::Rs384))
        .json(&request(service))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{service}");
    let body: Value = resp.json().await.unwrap();
    let cards = body["cards"].as_array().unwrap();
    assert_eq!(cards.len(), 1, "{service}: {body}");
    cards[0].clone()
}

/// Every service's card, each from its own call (no suppression or dedup between them).
async fn all_cards() -> Vec<(&'static str, Value)> {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let mut out = Vec::new();
    for service in SERVICES {
        out.push((*service, card(&gw, service).await));
    }
    gw.stop().await;
    out
}

/// "2026-01-01 11:50 UTC" → "<now>": the times move with the clock, nothing else may.
fn mask_times(text: &str) -> String {
    const STAMP: usize = "2026-01-01 11:50".len();
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(" UTC") {
        let head = &rest[..i];
        let stamp = head.len().checked_sub(STAMP).map(|s| &head[s..]);
        let is_stamp = stamp.is_some_and(|s| {
            s.char_indices().all(|(k, c)| match k {
                4 | 7 => c == '-',
                10 => c == ' ',
                13 => c == ':',
                _ => c.is_ascii_digit(),
            })
        });
        if is_stamp {
            out.push_str(&head[..head.len() - STAMP]);
            out.push_str("<now>");
        } else {
            out.push_str(head);
            out.push_str(" UTC");
        }
        rest = &rest[i + " UTC".len()..];
    }
    out.push_str(rest);
    out
}

/// What a reviewer reads: the card's visible text, in order.
fn card_text(card: &Value) -> String {
    let labels = |key: &str| -> String {
        card[key]
            .as_array()
            .map(|xs| {
                xs.iter()
                    .map(|x| format!("- {}\n", x["label"].as_str().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default()
    };
    format!(
        "# {}\n\nindicator: {}\nsource: {}\n\n{}\n\n## suggestions\n{}\n## links\n{}",
        card["summary"].as_str().unwrap(),
        card["indicator"].as_str().unwrap(),
        card["source"]["label"].as_str().unwrap(),
        mask_times(card["detail"].as_str().unwrap()),
        labels("suggestions"),
        labels("links"),
    )
}

/// Compares `text` with the golden file of `service`, or rewrites it under `BLESS=1`.
fn assert_golden(service: &str, text: &str) {
    let path = repo()
        .join("tests/fixtures/cards")
        .join(format!("{service}.golden.md"));
    if std::env::var_os("BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        return;
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with BLESS=1 cargo test --test gateway card_text",
            path.display()
        )
    });
    assert!(
        golden == text,
        "{service}: the card differs from {} (after an intended change: BLESS=1 cargo test --test gateway card_text)\n--- golden\n{golden}\n--- now\n{text}",
        path.display()
    );
}

/// What every card must say or must not say, whatever its wording.
fn assert_reads_clinically(service: &str, card: &Value) {
    let summary = card["summary"].as_str().unwrap();
    assert!(summary.chars().count() < 140, "{service}: {summary}");
    let detail = card["detail"].as_str().unwrap();
    for raw in [
        "Cel",
        "mm[Hg]",
        "10*3",
        "[degF]",
        "umol",
        "Observation/",
        "→ 1 1",
    ] {
        assert!(!detail.contains(raw), "{service}: `{raw}` in {detail}");
    }
    assert!(
        !detail.contains("Trend:"),
        "{service}: trends belong in the app"
    );
    assert!(
        detail.contains("percentage points") && !detail.contains(" points;"),
        "{service}: {detail}"
    );
    assert!(
        [
            " v2.0.0: ",
            " v3.0.0: ",
            " v3.0.1: ",
            " v4.0.0: ",
            " v4.0.1: "
        ]
        .iter()
        .any(|v| detail.contains(v)),
        "{service}: model version missing: {detail}"
    );
    for must in ["**Data:** ", "synthetic", "**Next:**"] {
        assert!(
            detail.contains(must),
            "{service}: `{must}` missing: {detail}"
        );
    }
    let bullets = detail.lines().filter(|l| l.starts_with("- ")).count();
    assert!((1..=3).contains(&bullets), "{service}: {bullets} drivers");
    assert_eq!(card["links"][0]["type"], "smart", "{service}: the app link");
}

async fn golden(service: &str) {
    let keys = KeyServer::start().await;
    let gw = Gateway::with_keys(&keys).await;
    let card = card(&gw, service).await;
    gw.stop().await;
    assert_reads_clinically(service, &card);
    assert_golden(service, &card_text(&card));
}

#[tokio::test]
async fn golden_card_text_deterioration() {
    golden("deterioration").await;
}

#[tokio::test]
async fn golden_card_text_deterioration_encounter_start() {
    golden("deterioration-encounter-start").await;
}

#[tokio::test]
async fn golden_card_text_sepsis_screen() {
    golden("sepsis-screen").await;
}

#[tokio::test]
async fn golden_card_text_aki_nephrotoxic() {
    golden("aki-nephrotoxic").await;
}

#[tokio::test]
async fn golden_card_text_aki_nephrotoxic_select() {
    golden("aki-nephrotoxic-select").await;
}

#[test]
fn masking_replaces_only_card_time_stamps() {
    assert_eq!(
        mask_times("**Data:** 48 h to 2026-01-01 11:50 UTC, 3 measurements. UTC"),
        "**Data:** 48 h to <now>, 3 measurements. UTC"
    );
    assert_eq!(mask_times("x 11:50 UTC"), "x 11:50 UTC");
}

#[tokio::test]
async fn cards_fit_an_ehr_sidebar_in_chromium() {
    let cards = all_cards().await;
    let out_dir = repo().join("target/card-screenshots");
    let input = json!({
        "cards": cards.iter().map(|(name, card)| json!({"name": name, "card": card})).collect::<Vec<_>>(),
        "widths": [240, 320],
        "out_dir": out_dir,
    });
    let (ok, result) = common::run_node("card-render.mjs", &input);
    assert!(ok, "card-render.mjs failed: {result}");
    for pane in result["widths"].as_array().unwrap() {
        let width = pane["width"].as_u64().unwrap();
        assert!(
            pane["page_scroll_width"].as_u64().unwrap() <= width,
            "{width} px: the sidebar scrolls sideways: {pane}"
        );
        let max_lines = if width >= 320 {
            MAX_DETAIL_LINES_320
        } else {
            MAX_DETAIL_LINES_240
        };
        for c in pane["cards"].as_array().unwrap() {
            let name = c["name"].as_str().unwrap();
            let text = c["text"].as_str().unwrap();
            assert!(
                c["overflow_px"].as_f64().unwrap() <= 0.0,
                "{name} at {width} px overflows sideways: {c}"
            );
            assert!(
                c["card_right_px"].as_f64().unwrap() <= width as f64,
                "{name}: {c}"
            );
            let lines = c["detail_lines"].as_u64().unwrap();
            assert!(
                lines <= max_lines,
                "{name} at {width} px: detail is {lines} lines (at most {max_lines}): {text}"
            );
            for raw in ["Cel", "mm[Hg]", "10*3", "Observation/", "[degF]"] {
                assert!(
                    !text.contains(raw),
                    "{name} at {width} px shows `{raw}`: {text}"
                );
            }
            println!("{name} at {width} px: {lines} detail lines");
        }
        println!("screenshot: {}", pane["screenshot"]);
    }
}
