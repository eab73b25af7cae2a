//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of prime size `M` in which
//! every backend owns about `M / N` entries, and removing one backend moves only the flows it owned.
//! Tables depend only on the backends' addresses, so every node builds the same one.

use berth_common::MAGLEV_TABLE_SIZE;

/// FNV-1a, 64 bit, with a seed mixed in first: deterministic across nodes and releases.
fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x100_0000_01b3);
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Builds the table for backends identified by `names` (e.g. `addr:port`) whose map ids are `ids`.
/// An empty backend list yields `None`.
pub fn table(names: &[String], ids: &[u32]) -> Option<Vec<u32>> {
    let m = MAGLEV_TABLE_SIZE as u64;
    let n = names.len().min(ids.len());
    if n == 0 {
        return None;
    }
    let perms: Vec<(u64, u64)> = names[..n]
        .iter()
        .map(|name| {
            let offset = fnv1a(0x5eed_0001, name.as_bytes()) % m;
            let skip = fnv1a(0x5eed_0002, name.as_bytes()) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; n];
    let mut entry = vec![u32::MAX; MAGLEV_TABLE_SIZE];
    let mut filled = 0;
    'fill: loop {
        for i in 0..n {
            let (offset, skip) = perms[i];
            let mut c = (offset + next[i] * skip) % m;
            while entry[c as usize] != u32::MAX {
                next[i] += 1;
                c = (offset + next[i] * skip) % m;
            }
            entry[c as usize] = ids[i];
            next[i] += 1;
            filled += 1;
            if filled == MAGLEV_TABLE_SIZE {
                break 'fill;
            }
        }
    }
    Some(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> (Vec<String>, Vec<u32>) {
        (
            (0..n).map(|i| format!("10.244.0.{i}:8080")).collect(),
            (1..=n as u32).collect(),
        )
    }

    #[test]
    fn every_backend_gets_a_fair_share() {
        let (n, ids) = names(7);
        let t = table(&n, &ids).expect("table");
        for id in &ids {
            let share = t.iter().filter(|x| *x == id).count();
            let fair = MAGLEV_TABLE_SIZE / 7;
            assert!(
                share.abs_diff(fair) <= fair / 10 + 1,
                "backend {id} has {share}, fair {fair}"
            );
        }
    }

    #[test]
    fn removing_a_backend_moves_few_entries() {
        let (n, ids) = names(10);
        let before = table(&n, &ids).expect("table");
        let after = table(&n[..9], &ids[..9]).expect("table");
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(a, b)| a != b && **a != 10)
            .count();
        // Only entries of the removed backend must move; Maglev allows a little more churn.
        assert!(moved < MAGLEV_TABLE_SIZE / 10, "{moved} entries moved");
    }

    #[test]
    fn deterministic() {
        let (n, ids) = names(3);
        assert_eq!(table(&n, &ids), table(&n, &ids));
        assert_eq!(table(&[], &[]), None);
    }
}
