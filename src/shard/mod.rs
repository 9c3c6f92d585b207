//! Scale-out (`--sharding`, SPEC §6): every replica works, each on its own part of the sessions.
//!
//! - [`buckets`]: namespaces hash into 256 buckets (64-bit FNV-1a, top 8 bits); buckets go to
//!   live members by rendezvous hashing. Pure.
//! - [`handover`]: the protocol that keeps one actor per bucket (claim, confirm, act, release,
//!   acknowledge), as a pure state machine.
//! - [`members`]: reading the ring's member Leases (label `ambient-code.io/operator-ring`):
//!   who is live, what each holds.
//! - [`coordinator`]: the loop that writes this replica's member Lease, reads the ring and
//!   drives the rest; it steps down like a leader whose renewals stall.
//! - [`gate`]: what engines and watches share with it at run time: admission of reconciles by
//!   bucket, in-flight counts, the scope the caches follow and what they hold.
//! - [`selector`]: the `shardSelector` query parameter on a watch's requests, so the API
//!   server sends each replica only its part (KEP-5866), when it can.

pub mod buckets;
pub mod coordinator;
pub mod gate;
pub mod handover;
pub mod members;
pub mod selector;

pub use buckets::{Bucket, BucketSet, bucket_of};
pub use coordinator::{Coordinator, Membership};
pub use gate::{Scope, ShardGate, WatchSlot};
pub use selector::ShardSelector;
