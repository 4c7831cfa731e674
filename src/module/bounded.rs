//! Answers of HTTP servers a Transform may name (registries, their token services), read
//! with a bound: a server cannot make the operator hold more than the caller allows.

/// At most `limit` bytes of the body of `response`, read chunk by chunk: `None` when it is
/// longer (the rest is never read).
pub async fn read_at_most(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}
