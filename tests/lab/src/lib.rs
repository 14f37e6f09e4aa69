//! The weak-network lab: network namespaces joined by veth pairs, `nft` and `tc` faults, the
//! scenario matrix and the load run.
