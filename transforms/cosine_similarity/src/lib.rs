//! Cosine similarity between a request embedding (e.g. the query) and an
//! entity's stored embedding.

#[wafer_sdk::transform(output = "similarity")]
pub fn cosine_similarity(query_embedding: &[f32], item_embedding: &[f32]) -> Option<f64> {
    if query_embedding.len() != item_embedding.len() || query_embedding.is_empty() {
        return None;
    }
    let (mut dot, mut norm_q, mut norm_i) = (0.0f64, 0.0f64, 0.0f64);
    for (&q, &i) in query_embedding.iter().zip(item_embedding) {
        let (q, i) = (q as f64, i as f64);
        dot += q * i;
        norm_q += q * q;
        norm_i += i * i;
    }
    if norm_q == 0.0 || norm_i == 0.0 {
        return None;
    }
    Some(dot / (norm_q.sqrt() * norm_i.sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity() {
        assert_eq!(cosine_similarity(&[1.0, 0.0], &[2.0, 0.0]), Some(1.0));
        assert_eq!(cosine_similarity(&[1.0, 0.0], &[0.0, 3.0]), Some(0.0));
        assert_eq!(cosine_similarity(&[1.0], &[1.0, 2.0]), None);
        assert_eq!(cosine_similarity(&[], &[]), None);
    }
}
