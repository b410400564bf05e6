//! The spec's rules for a card, checked before a card is sent and by the tests.

use crate::cds::wire::{Card, LinkType};

/// Every rule `card` breaks (empty when valid). Rules: CDS Hooks 2.0 "Card Attributes".
pub fn card_problems(card: &Card) -> Vec<String> {
    let mut problems = Vec::new();
    let chars = card.summary.chars().count();
    if chars == 0 || chars >= 140 {
        problems.push(format!("summary has {chars} characters; must be 1..139"));
    }
    if card.source.label.trim().is_empty() {
        problems.push("source.label is empty".into());
    }
    if card.detail.as_deref().is_some_and(|d| d.trim().is_empty()) {
        problems.push("detail is present but empty".into());
    }
    if !card.suggestions.is_empty() && card.selection_behavior.is_none() {
        problems.push("suggestions without selectionBehavior".into());
    }
    for (i, reason) in card.override_reasons.iter().enumerate() {
        if reason
            .display
            .as_deref()
            .is_none_or(|d| d.trim().is_empty())
        {
            problems.push(format!("overrideReasons[{i}] has no display"));
        }
    }
    for (i, link) in card.links.iter().enumerate() {
        if link.app_context.is_some() && link.kind == LinkType::Absolute {
            problems.push(format!("links[{i}]: appContext on an absolute link"));
        }
        if url::Url::parse(&link.url).is_err() {
            problems.push(format!("links[{i}]: url is not absolute"));
        }
    }
    if let Some(url) = &card.source.url {
        if url::Url::parse(url).is_err() {
            problems.push("source.url is not absolute".into());
        }
    }
    problems
}
