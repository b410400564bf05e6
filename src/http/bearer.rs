//! Static bearer tokens (`[[api_tokens]]`, `[[admin_tokens]]`, `[[metrics_tokens]]`): who
//! holds the one a request carries.

/// The holder named in `tokens` (`(name, sha256)` pairs from the configuration) of the bearer
/// token `req` carries, if any. Every configured hash is compared in full, so the timing says
/// nothing about which (if any) matched. Used by the prediction API and the admin endpoints.
pub fn static_token_holder<'t>(
    tokens: &'t [(String, [u8; 32])],
    req: &actix_web::HttpRequest,
) -> Option<&'t str> {
    static_token_match(tokens, |(_, hash)| hash, req).map(|(name, _)| name.as_str())
}

/// The entry of `tokens` whose sha256 (read by `digest`) is that of the bearer token `req`
/// carries, comparing every entry in full like [`static_token_holder`].
pub fn static_token_match<'t, T>(
    tokens: &'t [T],
    digest: impl Fn(&T) -> &[u8; 32],
    req: &actix_web::HttpRequest,
) -> Option<&'t T> {
    use sha2::Digest as _;
    let token = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|_| !tokens.is_empty())?;
    let presented: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
    tokens.iter().fold(None, |found, entry| {
        let same = digest(entry)
            .iter()
            .zip(&presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        found.or(same.then_some(entry))
    })
}
