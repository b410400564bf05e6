//! Free text scrubbed for export, recall first, where a site opts in (`bedside export
//! --free-text scrub`; the default drops it). An offline rules engine, no model, nothing
//! downloaded: a word survives only if it is on a fixed list of ordinary English and clinical
//! words that are not names, months or places; a number only if it is small (0–89, at most one
//! decimal, optionally with a listed unit) — so no date, phone, record number or age over 89
//! gets through. Everything else becomes `[REDACTED]`. It loses meaning before it leaks:
//! "pt seen by Dr Okafor on 3/4, SpO2 88% on 2L" → "pt seen by [REDACTED] [REDACTED] on
//! [REDACTED] spo2 88% on 2l".

use std::collections::HashSet;
use std::sync::OnceLock;

/// What a removed word becomes.
pub const REDACTED: &str = "[REDACTED]";

/// Longest text scrubbed (characters); longer text is cut first.
const MAX_CHARS: usize = 2_000;

/// Ordinary words kept as they are (lower case). No given names (will, grace, mark, bill…),
/// months, weekdays or places.
const WORDS: &str = "
a about above after again against all already also although always am an and any are as at
away back be because been before being below between both but by can cannot could did do does
doing done down during each either else enough even ever every few for from further had has
have having he her here hers herself him himself his how however i if in into is it its itself
just less like more most much must my myself near neither never no nor not now of off often on
once only or other our ours out over own per please same she should since so some still such
than that the their theirs them then there these they this those though through thus to too
under until up upon us very was we well were what when where whether which while who whom whose
why with within without would yes yet you your
able acute add added admit admitted advice advised afebrile agree agreed alert alarm alarms
allergy ambulating appropriate assess assessed assessment aware bed bedside better bleeding
blood breathing call called card cards care change changed chart check checked chest clinical
clinically comfortable concern concerned confirm confirmed confused consider considered
continue continued current currently daily data day days decline declined deteriorating
deterioration diagnosis discharge discussed dose doses drowsy drug duplicate early eating
elevated escalate escalated evening examined expected family fever fluid fluids follow
followed good goal hour hours high hospital improve improved improving increase increased
infection irrelevant issue kidney known lab labs last later level levels low main managed
manage medical medication medications minute minutes monitor monitored monitoring morning night
noted nurse nursing observation observations occurred order ordered orders pain palliative
patient patients plan planned post pre prior problem recent recently reduce reduced repeat
repeated result results review reviewed risk rising same score scored scores seen sepsis septic
severe shift signs stable start started status stop stopped team test tests therapy think
time today tomorrow treated treatment trend unchanged unit urine usual value values vital
vitals ward warning week weeks worse worsening wrong yesterday
aki ards bp bpm cr creatinine crp ecg fio2 gcs hb hr icu iv lactate map mews mmhg news news2
o2 oxygen po2 pulse qsofa resp rr sats sirs sofa spo2 temp wbc abx antibiotic antibiotics
culture cultures nephrotoxic nsaid vancomycin contrast dialysis renal cardiac respiratory
systolic diastolic pressure rate saturation temperature consciousness hypotension hypoxia
tachycardia tachypnoea tachypnea fall falls false positive negative alert alerts pt pts dr md rn
l min mg ml mcg g kg h hr hrs d mmol umol µmol dl mg/dl mmol/l % x
";

/// Units a small number may carry in one token (`2l`, `5mg`, `88%`).
const UNITS: [&str; 14] = [
    "%", "l", "ml", "mg", "mcg", "g", "kg", "h", "hr", "hrs", "d", "min", "mmhg", "bpm",
];

fn words() -> &'static HashSet<&'static str> {
    static WORDS_SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    WORDS_SET.get_or_init(|| WORDS.split_whitespace().collect())
}

/// A number below 90 with at most one decimal: a vital sign or a dose, not a date, an age over
/// 89 or an identifier.
fn small_number(text: &str) -> bool {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    !int.is_empty()
        && int.len() <= 2
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= 1
        && frac.bytes().all(|b| b.is_ascii_digit())
        && int.parse::<u32>().is_ok_and(|n| n < 90)
}

/// Whether one token (lower case, outer punctuation removed) may stay.
fn allowed(core: &str) -> bool {
    if core.is_empty() || words().contains(core) || small_number(core) {
        return true;
    }
    // A small number with a unit: `2l`, `88%`.
    let split = core
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(core.len());
    let (number, unit) = core.split_at(split);
    !number.is_empty() && small_number(number) && UNITS.contains(&unit)
}

/// Punctuation that may stand around a kept word.
fn is_outer(c: char) -> bool {
    matches!(
        c,
        '.' | ',' | ';' | ':' | '!' | '?' | '(' | ')' | '"' | '\''
    )
}

/// The text with every word not known to be safe replaced by [`REDACTED`], lower-cased and
/// single-spaced.
pub fn scrub(text: &str) -> String {
    let text: String = text.chars().take(MAX_CHARS).collect();
    text.split_whitespace()
        .map(|token| {
            let lower = token.to_lowercase();
            let core = lower.trim_matches(is_outer);
            if allowed(core) {
                lower
            } else {
                REDACTED.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_of_every_kind_are_removed() {
        let text = "Seen by Dr. Okafor with Mrs Jane Doe (MRN 00123456, SSN 123-45-6789) \
                    on 3/4/2026 and 2026-03-04; call 617-555-0199 or jane.doe@example.org, \
                    http://ehr.example/p/9, 10.0.0.7; lives at 12 Elm Street Boston 02139; \
                    aged 93 born March 1933";
        let out = scrub(text);
        for planted in [
            "okafor",
            "jane",
            "doe",
            "00123456",
            "123-45-6789",
            "3/4/2026",
            "2026-03-04",
            "617-555-0199",
            "example",
            "10.0.0.7",
            "elm",
            "boston",
            "02139",
            "93",
            "march",
            "1933",
        ] {
            assert!(!out.contains(planted), "`{planted}` survived: {out}");
        }
    }

    #[test]
    fn clinical_words_and_small_numbers_stay() {
        assert_eq!(
            scrub("Pt seen, SpO2 88% on 2L; already aware, plan: repeat lactate."),
            "pt seen, spo2 88% on 2l; already aware, plan: repeat lactate."
        );
        assert_eq!(scrub("Temp 38.5, HR 120"), "temp 38.5, hr [REDACTED]");
    }
}
