//! Shape rules: what a v1 update may say about clocks, on top of the byte grammar.
//!
//! yrs 0.28 trusts the shape of what it decodes. `Update::decode` appends every struct group of a
//! client to one list (a client listed twice gets overlapping blocks), and
//! `Update::integrate` then hands a block that starts below the client's clock to
//! `BlockStore::push`, which takes it for the filling of a Skip and overwrites whatever block
//! sits there — a heap use-after-free when that block is a linked item. Its delete set decoder
//! keeps only the last range list of a client listed twice, and a struct that depends on itself
//! (directly or through other structs of the same update) is never integrated and stays pending.
//! Yjs and yrs never write any of these shapes, so refusing them costs nothing legitimate.
//!
//! The rules (each a [`DecodeError::InvalidUpdate`]):
//! * a struct group has at least one struct, and no client has two struct groups;
//! * no client is listed twice in the delete set, and a client's delete ranges are not empty,
//!   in clock order and do not overlap (adjacent ranges are fine);
//! * the structs of an update can be integrated in some order: no struct refers (origin, right
//!   origin or parent) to a clock of its own client at or after its own clock, and no chain of
//!   references between clients loops back on itself;
//! * a parent named by id that lies in the update is a type (or deleted content, or GC): yrs
//!   returns `InvalidParent` for anything else — *after* integrating the structs before it, so
//!   the document keeps half an update nobody logged.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use crate::codec::DecodeError;

/// One client's struct group as read from the update.
#[derive(Debug, Default)]
pub(super) struct Group {
    pub client: u64,
    pub start: u32,
    pub end: u32,
    /// Skip ranges inside the group: holes the receiver must already hold.
    pub skips: Vec<(u32, u32)>,
    /// (clock of the referring struct, referenced client, referenced clock), in clock order.
    pub refs: Vec<(u32, u64, u32)>,
    /// (first clock, info byte) of every struct, in clock order.
    pub structs: Vec<(u32, u8)>,
    /// Parents the group's items name by id.
    pub parents: Vec<(u64, u32)>,
}

impl Group {
    fn in_skip(&self, clock: u32) -> bool {
        let i = self.skips.partition_point(|&(_, end)| end <= clock);
        self.skips.get(i).is_some_and(|&(start, _)| start <= clock)
    }
}

/// Tracks clients already seen in one section of an update.
#[derive(Default)]
pub(super) struct Seen(HashSet<u64>);

impl Seen {
    pub fn struct_group(&mut self, client: u64, structs: usize) -> Result<(), DecodeError> {
        if structs == 0 {
            return Err(DecodeError::InvalidUpdate("empty struct group"));
        }
        if !self.0.insert(client) {
            return Err(DecodeError::InvalidUpdate(
                "client listed twice in the update's structs",
            ));
        }
        Ok(())
    }

    pub fn delete_client(&mut self, client: u64) -> Result<(), DecodeError> {
        if !self.0.insert(client) {
            return Err(DecodeError::InvalidUpdate(
                "client listed twice in the delete set",
            ));
        }
        Ok(())
    }
}

/// Checks that a delete range is not empty and starts at or after the end of the previous one
/// of its client. (yrs parks an empty range of a client it does not know as a pending delete
/// set forever — found by fuzzing; no encoder writes one.)
pub(super) fn delete_range_in_order(
    prev_end: u64,
    clock: u64,
    len: u64,
) -> Result<(), DecodeError> {
    if len == 0 {
        return Err(DecodeError::InvalidUpdate("empty delete range"));
    }
    if clock < prev_end {
        return Err(DecodeError::InvalidUpdate(
            "delete ranges overlap or are out of order",
        ));
    }
    Ok(())
}

/// Checks that every parent an item names by id, when it lies in this update, is a type item,
/// deleted content or GC (what yrs 0.28 accepts as a parent without an error).
pub(super) fn check_parents(groups: &[Group]) -> Result<(), DecodeError> {
    const GC: u8 = 0;
    const DELETED: u8 = 1;
    const TYPE: u8 = 7;
    const SKIP: u8 = 10;
    let index: HashMap<u64, &Group> = groups.iter().map(|g| (g.client, g)).collect();
    for &(client, clock) in groups.iter().flat_map(|g| &g.parents) {
        let Some(g) = index.get(&client) else {
            continue;
        };
        if clock < g.start || clock >= g.end {
            continue;
        }
        let at = g.structs.partition_point(|&(start, _)| start <= clock);
        let info = g.structs[at - 1].1;
        let ok = matches!(info, GC | SKIP) || matches!(info & 0b1111, DELETED | TYPE);
        if !ok {
            return Err(DecodeError::InvalidUpdate("parent is not a type"));
        }
    }
    Ok(())
}

/// Checks that the structs of `groups` (one per client, see [`Seen`]) can all be integrated:
/// simulates the integration order, each client advancing until a struct refers to a clock of
/// this update not integrated yet, and refuses the update if some client never gets past.
/// References outside the update's structs (or into its skips) are the receiver's business
/// (see `UpdateInfo::missing_dependency`) and count as present here. O(n log n) in references.
pub(super) fn check_integrable(groups: &[Group]) -> Result<(), DecodeError> {
    let index: HashMap<u64, usize> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.client, i))
        .collect();
    // own-client references first: the common way to build a loop, with a clearer message
    for g in groups {
        if g.refs
            .iter()
            .any(|&(src, c, k)| c == g.client && k >= src && k < g.end)
        {
            return Err(DecodeError::InvalidUpdate(
                "struct refers to its own client at or after its own clock",
            ));
        }
    }
    let mut integrated: Vec<u32> = groups.iter().map(|g| g.start).collect();
    let mut cursor = vec![0usize; groups.len()];
    // per group: clients waiting for it to reach a clock, smallest clock first
    let mut waiting: Vec<BinaryHeap<Reverse<(u32, usize)>>> = vec![BinaryHeap::new(); groups.len()];
    let mut queue: Vec<usize> = (0..groups.len()).collect();
    while let Some(g) = queue.pop() {
        let group = &groups[g];
        while let Some(&(src, client, clock)) = group.refs.get(cursor[g]) {
            // every struct before the referring one integrates
            integrated[g] = integrated[g].max(src);
            let blocker = index.get(&client).copied().filter(|&t| {
                let target = &groups[t];
                clock >= target.start
                    && clock < target.end
                    && !target.in_skip(clock)
                    && clock >= integrated[t]
            });
            match blocker {
                Some(t) => {
                    waiting[t].push(Reverse((clock, g)));
                    break;
                }
                None => cursor[g] += 1,
            }
        }
        if cursor[g] == group.refs.len() {
            integrated[g] = group.end;
        }
        while let Some(&Reverse((clock, waiter))) = waiting[g].peek() {
            if clock >= integrated[g] {
                break;
            }
            waiting[g].pop();
            queue.push(waiter);
        }
    }
    if cursor.iter().zip(groups).any(|(&c, g)| c < g.refs.len()) {
        return Err(DecodeError::InvalidUpdate(
            "structs refer to each other in a cycle",
        ));
    }
    Ok(())
}
