//! String features from a request's email address: its domain, lowercased,
//! and a stable hash bucket of it (for bucketing or A/B splits that must be
//! the same in training and serving).

#[derive(wafer_sdk::Outputs)]
pub struct EmailFeatures {
    /// `None` when the address has no `@` or an empty domain.
    pub email_domain: Option<String>,
    /// FNV-1a of the lowercased domain (the whole address when there is no
    /// domain), modulo 1024.
    pub domain_bucket: i64,
    pub is_free_mail: bool,
}

const FREE_MAIL: &[&str] = &[
    "gmail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "proton.me",
];

#[wafer_sdk::transform]
pub fn email_features(email: &str) -> EmailFeatures {
    let domain = email
        .rsplit_once('@')
        .map(|(_, domain)| domain.trim().to_ascii_lowercase())
        .filter(|domain| !domain.is_empty());
    let key = domain.clone().unwrap_or_else(|| email.to_ascii_lowercase());
    EmailFeatures {
        is_free_mail: domain.as_deref().is_some_and(|d| FREE_MAIL.contains(&d)),
        domain_bucket: (fnv1a(key.as_bytes()) % 1024) as i64,
        email_domain: domain,
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        let f = email_features("Ada@Example.COM");
        assert_eq!(f.email_domain.as_deref(), Some("example.com"));
        assert!(!f.is_free_mail);
        assert!(email_features("x@gmail.com").is_free_mail);
        assert_eq!(email_features("no-at-sign").email_domain, None);
        assert_eq!(
            email_features("a@b.org").domain_bucket,
            email_features("c@B.org").domain_bucket
        );
    }
}
