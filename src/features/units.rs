//! UCUM unit conversion for the units vital signs arrive in.
//!
//! Conversions are explicit; a unit not listed is rejected rather than guessed (a °F value
//! read as °C is a fever of 98). Human-readable spellings EHRs put in `Quantity.unit` are
//! accepted only when no UCUM `code` is given.

/// Canonical units features may be declared in.
const CANONICAL: &[&str] = &["/min", "%", "Cel", "mm[Hg]", "1"];

/// Whether `unit` is a canonical unit of some feature.
pub fn is_canonical(unit: &str) -> bool {
    CANONICAL.contains(&unit)
}

/// Maps human spellings to UCUM codes.
fn ucum_of(unit: &str) -> &str {
    match unit {
        "°C" | "C" | "degC" => "Cel",
        "°F" | "F" | "degF" => "[degF]",
        "mmHg" | "mm Hg" => "mm[Hg]",
        "bpm" | "beats/min" | "beats/minute" | "breaths/min" | "breaths/minute" => "/min",
        other => other,
    }
}

/// Converts `value` from `unit` (UCUM code, or a known human spelling) to canonical `to`.
pub fn convert(value: f64, unit: &str, to: &str) -> Option<f64> {
    let from = ucum_of(unit.trim());
    let converted = match (from, to) {
        (a, b) if a == b => value,
        ("{beats}/min" | "{breaths}/min" | "1/min" | "{counts}/min", "/min") => value,
        ("[degF]", "Cel") => (value - 32.0) * 5.0 / 9.0,
        ("K", "Cel") => value - 273.15,
        ("kPa", "mm[Hg]") => value * 7.500_615_75,
        ("", "1") => value,
        _ => return None,
    };
    converted.is_finite().then_some(converted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_known_units_and_refuses_the_rest() {
        assert_eq!(
            convert(98.6, "[degF]", "Cel").map(|c| (c * 10.0).round() / 10.0),
            Some(37.0)
        );
        assert_eq!(
            convert(98.6, "°F", "Cel").map(|c| (c * 10.0).round() / 10.0),
            Some(37.0)
        );
        assert_eq!(convert(88.0, "{beats}/min", "/min"), Some(88.0));
        assert_eq!(convert(16.0, "kPa", "mm[Hg]").map(f64::round), Some(120.0));
        assert_eq!(convert(37.0, "Cel", "Cel"), Some(37.0));
        assert_eq!(convert(37.0, "mg/dL", "Cel"), None);
        assert_eq!(convert(f64::NAN, "Cel", "Cel"), None);
    }
}
