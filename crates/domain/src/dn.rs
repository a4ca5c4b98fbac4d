//! Splitting APIC distinguished names into relative names.

/// Splits a DN into RNs; slashes inside `[...]` belong to the RN. `None` if brackets are
/// unbalanced.
pub fn split_dn(dn: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, ch) in dn.char_indices() {
        match ch {
            '[' => depth += 1,
            ']' => depth = depth.checked_sub(1)?,
            '/' if depth == 0 => {
                out.push(&dn[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    (depth == 0).then(|| {
        out.push(&dn[start..]);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_keep_their_slashes() {
        assert_eq!(
            split_dn("uni/tn-t/ap-a/epg-e/rspathAtt-[topology/pod-1/paths-101/pathep-[eth1/7]]"),
            Some(vec![
                "uni",
                "tn-t",
                "ap-a",
                "epg-e",
                "rspathAtt-[topology/pod-1/paths-101/pathep-[eth1/7]]"
            ])
        );
        assert_eq!(split_dn("uni/x-[a"), None);
        assert_eq!(split_dn("uni/x-]a"), None);
    }
}
