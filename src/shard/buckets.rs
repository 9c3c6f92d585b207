//! Namespace buckets and who owns them (SPEC §6). Pure functions, no I/O.
//!
//! - A namespace's bucket is the top 8 bits of the 64-bit FNV-1a hash of its name, so bucket
//!   `b` is exactly the hash range `[b·2^56, (b+1)·2^56)` that the API server's
//!   `shardRange(object.metadata.namespace, …)` filters on (KEP-5866 hashes the field with the
//!   same FNV-1a): a set of buckets is a server-side shard selector as it is.
//! - Buckets go to live members by rendezvous (highest random weight) hashing: each member
//!   scores each bucket, the highest score wins. A member that joins takes only buckets it now
//!   scores highest on (about 1/N of them, from every other member); one that leaves hands out
//!   only its own. Every replica computes the same assignment from the same member names.

use std::fmt;

/// Number of buckets. Fixed: changing it (or [`score`]) changes every assignment, so all
/// replicas of a ring must agree on it.
pub const BUCKETS: usize = 256;

/// One of the [`BUCKETS`] buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bucket(pub u8);

impl Bucket {
    /// Every bucket, in order.
    pub fn all() -> impl Iterator<Item = Bucket> {
        (0..=u8::MAX).map(Bucket)
    }

    /// The index, `0..BUCKETS`.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The 64-bit FNV-1a hash (Go's `hash/fnv` `New64a`, which the API server uses).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME)
    })
}

/// The bucket of a namespace (and of everything in it).
///
/// FNV-1a's top byte hardly depends on the last two bytes hashed: names alike but for their
/// last two characters (`team-01` … `team-99`) share a bucket, and so a replica. The split is
/// even over names that differ earlier, as project names do. It cannot be mixed further:
/// the API server filters on this hash's ranges.
pub fn bucket_of(namespace: &str) -> Bucket {
    Bucket((fnv1a64(namespace.as_bytes()) >> 56) as u8)
}

/// Murmur3's 64-bit finaliser: every input bit flips about half the output bits.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// `member`'s rendezvous score for `bucket` (higher wins). FNV-1a of the name, mixed with the
/// bucket and finalised, so scores of one member are independent across buckets and those of
/// similar names (`op-0`, `op-1`) independent of each other.
pub fn score(member: &str, bucket: Bucket) -> u64 {
    mix(fnv1a64(member.as_bytes()) ^ (u64::from(bucket.0) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// The member that owns `bucket` among `members` (ties, which need equal 64-bit scores, go to
/// the smaller name); `None` without members.
pub fn owner<'a>(bucket: Bucket, members: &[&'a str]) -> Option<&'a str> {
    members
        .iter()
        .copied()
        .max_by(|a, b| score(a, bucket).cmp(&score(b, bucket)).then(b.cmp(a)))
}

/// The buckets `me` owns when `members` (which should include `me`) are the live members.
pub fn assigned(me: &str, members: &[&str]) -> BucketSet {
    Bucket::all()
        .filter(|b| owner(*b, members) == Some(me))
        .collect()
}

/// A set of buckets (a 256-bit bitmap); `Copy`, cheap to compare.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct BucketSet([u64; 4]);

impl BucketSet {
    /// No bucket.
    pub const EMPTY: BucketSet = BucketSet([0; 4]);
    /// Every bucket.
    pub const ALL: BucketSet = BucketSet([u64::MAX; 4]);

    /// Whether `bucket` is in the set.
    pub fn contains(&self, bucket: Bucket) -> bool {
        self.0[bucket.index() / 64] & (1 << (bucket.index() % 64)) != 0
    }

    /// Adds `bucket`.
    pub fn insert(&mut self, bucket: Bucket) {
        self.0[bucket.index() / 64] |= 1 << (bucket.index() % 64);
    }

    /// Removes `bucket`.
    pub fn remove(&mut self, bucket: Bucket) {
        self.0[bucket.index() / 64] &= !(1 << (bucket.index() % 64));
    }

    /// Number of buckets in the set.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    /// `self ∪ other`.
    #[must_use]
    pub fn union(&self, other: &BucketSet) -> BucketSet {
        BucketSet(std::array::from_fn(|i| self.0[i] | other.0[i]))
    }

    /// `self ∩ other`.
    #[must_use]
    pub fn intersection(&self, other: &BucketSet) -> BucketSet {
        BucketSet(std::array::from_fn(|i| self.0[i] & other.0[i]))
    }

    /// `self \ other`.
    #[must_use]
    pub fn difference(&self, other: &BucketSet) -> BucketSet {
        BucketSet(std::array::from_fn(|i| self.0[i] & !other.0[i]))
    }

    /// Whether every bucket of `self` is in `other`.
    pub fn is_subset(&self, other: &BucketSet) -> bool {
        self.difference(other).is_empty()
    }

    /// The buckets, in order.
    pub fn iter(&self) -> impl Iterator<Item = Bucket> + '_ {
        Bucket::all().filter(|b| self.contains(*b))
    }

    /// Whether the namespace's bucket is in the set.
    pub fn contains_namespace(&self, namespace: &str) -> bool {
        self.contains(bucket_of(namespace))
    }

    /// Maximal runs of consecutive buckets, as half-open `[start, end)` bucket indices
    /// (`end` up to [`BUCKETS`]).
    pub fn runs(&self) -> Vec<(usize, usize)> {
        let mut runs = Vec::new();
        let mut start = None;
        for index in 0..=BUCKETS {
            let inside = index < BUCKETS && self.contains(Bucket(index as u8));
            match (inside, start) {
                (true, None) => start = Some(index),
                (false, Some(from)) => {
                    runs.push((from, index));
                    start = None;
                }
                _ => {}
            }
        }
        runs
    }

    /// The KEP-5866 shard selector matching exactly the objects whose namespace is in one of
    /// these buckets: one `shardRange(object.metadata.namespace, 'start', 'end')` per run of
    /// consecutive buckets, joined by `||`, bounds as the API server demands them (16 lower-case
    /// hex digits, `0x10000000000000000` for 2^64). `None` for the empty set, which no selector
    /// expresses (an absent selector means everything).
    pub fn selector(&self) -> Option<String> {
        let bound = |index: usize| {
            if index == BUCKETS {
                "0x10000000000000000".to_string()
            } else {
                format!("0x{:016x}", (index as u64) << 56)
            }
        };
        let runs = self.runs();
        if runs.is_empty() {
            return None;
        }
        Some(
            runs.into_iter()
                .map(|(start, end)| {
                    format!(
                        "shardRange(object.metadata.namespace, '{}', '{}')",
                        bound(start),
                        bound(end)
                    )
                })
                .collect::<Vec<_>>()
                .join(" || "),
        )
    }

    /// The set as 64 hex digits (bucket 0 is the lowest bit of the last digit); what a member
    /// Lease's annotation holds.
    pub fn encode(&self) -> String {
        self.0.iter().rev().map(|w| format!("{w:016x}")).collect()
    }

    /// Parses [`encode`](Self::encode)'s form.
    pub fn decode(text: &str) -> Result<BucketSet, BucketSetParseError> {
        if text.len() != 64 || !text.is_ascii() {
            return Err(BucketSetParseError(text.to_string()));
        }
        let mut words = [0u64; 4];
        for (i, word) in words.iter_mut().rev().enumerate() {
            *word = u64::from_str_radix(&text[i * 16..(i + 1) * 16], 16)
                .map_err(|_| BucketSetParseError(text.to_string()))?;
        }
        Ok(BucketSet(words))
    }
}

/// Text that is not a bucket set (64 hex digits, or the `0-3,7` form).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a bucket set: {0:?}")]
pub struct BucketSetParseError(pub String);

impl FromIterator<Bucket> for BucketSet {
    fn from_iter<I: IntoIterator<Item = Bucket>>(iter: I) -> Self {
        let mut set = BucketSet::EMPTY;
        for bucket in iter {
            set.insert(bucket);
        }
        set
    }
}

/// Compact runs for logs: `0-3,7,9-12`; `-` when empty.
impl fmt::Display for BucketSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let runs = self.runs();
        if runs.is_empty() {
            return f.write_str("-");
        }
        for (i, (start, end)) in runs.into_iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if end - start == 1 {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{}", end - 1)?;
            }
        }
        Ok(())
    }
}

/// Parses the [`Display`](fmt::Display) form (`0-3,7`; `-` for none), as logged.
impl std::str::FromStr for BucketSet {
    type Err = BucketSetParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || BucketSetParseError(text.to_string());
        let mut set = BucketSet::EMPTY;
        if text == "-" {
            return Ok(set);
        }
        for part in text.split(',') {
            let (from, to) = part.split_once('-').unwrap_or((part, part));
            let from: u8 = from.parse().map_err(|_| error())?;
            let to: u8 = to.parse().map_err(|_| error())?;
            if from > to {
                return Err(error());
            }
            (from..=to).for_each(|b| set.insert(Bucket(b)));
        }
        Ok(set)
    }
}

impl fmt::Debug for BucketSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BucketSet({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}-{i}")).collect()
    }

    fn refs(names: &[String]) -> Vec<&str> {
        names.iter().map(String::as_str).collect()
    }

    #[test]
    fn fnv1a_matches_the_reference_values() {
        // Go: fnv.New64a() over the same bytes (the API server's sharding.HashField).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        // Hashes the API server filtered by in a sharded list (cluster/README.md).
        assert_eq!(fnv1a64(b"kube-node-lease"), 0x021f_b6dd_71b8_0174);
        assert_eq!(bucket_of("shard-beta"), Bucket(0x55));
        assert_eq!(bucket_of("default"), Bucket(0xeb));
    }

    #[test]
    fn names_alike_but_for_their_last_two_characters_share_a_bucket() {
        let suffixed: BTreeSet<Bucket> =
            (10..40).map(|i| bucket_of(&format!("team-{i}"))).collect();
        assert_eq!(suffixed.len(), 1, "{suffixed:?}");
        let prefixed: BTreeSet<Bucket> =
            (10..40).map(|i| bucket_of(&format!("{i}-team"))).collect();
        assert!(prefixed.len() >= 25, "{prefixed:?}");
    }

    #[test]
    fn a_bucket_set_is_the_shard_selector_of_its_hash_ranges() {
        let set: BucketSet = [0, 1, 2, 7, 255].into_iter().map(Bucket).collect();
        assert_eq!(set.runs(), vec![(0, 3), (7, 8), (255, 256)]);
        assert_eq!(
            set.selector().as_deref(),
            Some(
                "shardRange(object.metadata.namespace, '0x0000000000000000', '0x0300000000000000') \
                 || shardRange(object.metadata.namespace, '0x0700000000000000', '0x0800000000000000') \
                 || shardRange(object.metadata.namespace, '0xff00000000000000', '0x10000000000000000')"
            )
        );
        assert_eq!(BucketSet::EMPTY.selector(), None);
        assert_eq!(
            BucketSet::ALL.selector().as_deref(),
            Some(
                "shardRange(object.metadata.namespace, '0x0000000000000000', '0x10000000000000000')"
            )
        );
        assert_eq!(set.to_string(), "0-2,7,255");
        assert_eq!(BucketSet::EMPTY.to_string(), "-");
        assert_eq!("0-2,7,255".parse(), Ok(set));
        assert_eq!("-".parse(), Ok(BucketSet::EMPTY));
        assert_eq!("0-255".parse(), Ok(BucketSet::ALL));
        assert!("3-1".parse::<BucketSet>().is_err() && "x".parse::<BucketSet>().is_err());
    }

    #[test]
    fn a_namespace_is_in_the_range_of_its_bucket() {
        for namespace in ["default", "team-a", "kube-system", "x"] {
            let hash = fnv1a64(namespace.as_bytes());
            let bucket = bucket_of(namespace);
            let start = u128::from(bucket.0) << 56;
            assert!(start <= u128::from(hash) && u128::from(hash) < start + (1 << 56));
        }
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let set: BucketSet = [3, 64, 130, 200, 255].into_iter().map(Bucket).collect();
        let text = set.encode();
        assert_eq!(text.len(), 64);
        assert_eq!(BucketSet::decode(&text), Ok(set));
        assert_eq!(
            BucketSet::decode(&BucketSet::ALL.encode()),
            Ok(BucketSet::ALL)
        );
        assert_eq!(
            BucketSet::decode(&BucketSet::EMPTY.encode()),
            Ok(BucketSet::EMPTY)
        );
        assert!(BucketSet::decode("ff").is_err());
        assert!(BucketSet::decode(&"g".repeat(64)).is_err());
    }

    #[test]
    fn set_operations() {
        let a: BucketSet = [1, 2, 3].into_iter().map(Bucket).collect();
        let b: BucketSet = [3, 4].into_iter().map(Bucket).collect();
        assert_eq!(a.union(&b).len(), 4);
        assert_eq!(
            a.intersection(&b).iter().collect::<Vec<_>>(),
            vec![Bucket(3)]
        );
        assert_eq!(a.difference(&b).len(), 2);
        assert!(a.intersection(&b).is_subset(&a));
        assert!(!a.is_subset(&b));
        assert_eq!(BucketSet::ALL.len(), BUCKETS);
    }

    #[test]
    fn every_bucket_has_exactly_one_owner_and_shares_are_even() {
        for n in 1..=8 {
            for prefix in ["agentic-operator-7d9f8c-x2k4p", "op", "replica"] {
                let members = names(prefix, n);
                let members = refs(&members);
                let shares: Vec<usize> = members
                    .iter()
                    .map(|m| assigned(m, &members).len())
                    .collect();
                assert_eq!(shares.iter().sum::<usize>(), BUCKETS, "{members:?}");
                let fair = BUCKETS as f64 / n as f64;
                for (member, share) in members.iter().zip(&shares) {
                    assert!(
                        (*share as f64 - fair).abs() <= fair * 0.4,
                        "{member} owns {share} of {BUCKETS} buckets among {n} (fair share {fair:.0})"
                    );
                }
            }
        }
    }

    #[test]
    fn a_join_moves_about_one_nth_of_the_buckets_and_only_to_the_newcomer() {
        for n in 1..=6 {
            let before = names("agentic-operator", n);
            let mut after = before.clone();
            after.push("agentic-operator-new".into());
            let (before, after) = (refs(&before), refs(&after));
            let moved: Vec<Bucket> = Bucket::all()
                .filter(|b| owner(*b, &before) != owner(*b, &after))
                .collect();
            assert!(
                moved
                    .iter()
                    .all(|b| owner(*b, &after) == Some("agentic-operator-new")),
                "a join moved buckets between existing members"
            );
            let expected = BUCKETS as f64 / (n + 1) as f64;
            assert!(
                (moved.len() as f64 - expected).abs() <= expected * 0.4,
                "{} of {BUCKETS} buckets moved on the join of member {} (about {expected:.0} expected)",
                moved.len(),
                n + 1
            );
        }
    }

    #[test]
    fn a_leave_moves_only_the_leavers_buckets() {
        for n in 2..=6 {
            let before = names("op", n);
            let before = refs(&before);
            let leaver = before[n / 2];
            let after: Vec<&str> = before.iter().copied().filter(|m| *m != leaver).collect();
            for bucket in Bucket::all() {
                let (was, is) = (owner(bucket, &before), owner(bucket, &after));
                if was != Some(leaver) {
                    assert_eq!(was, is, "bucket {bucket:?} moved though its owner stayed");
                } else {
                    assert_ne!(is, Some(leaver));
                }
            }
        }
    }

    #[test]
    fn the_assignment_does_not_depend_on_the_order_members_are_listed_in() {
        let members = names("op", 5);
        let forward = refs(&members);
        let mut backward = forward.clone();
        backward.reverse();
        for bucket in Bucket::all() {
            assert_eq!(owner(bucket, &forward), owner(bucket, &backward));
        }
        assert_eq!(owner(Bucket(0), &[]), None);
    }
}
