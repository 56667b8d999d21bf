//! # A linearizability checker for one register (Wing–Gong / Lowe)
//!
//! [`check_register`] decides whether a history of writes and reads of one register
//! is linearizable: whether each operation can be given a point in time between its
//! invocation and its completion so that every read returns the value of the last
//! write before it (or the initial value). It is the search of Wing and Gong with
//! Lowe's memoisation (the "just-in-time linearisation" of Porcupine and Knossos):
//! walk the history's call and return events in time order; at a call, try to
//! linearize the operation now (if the model allows it), remembering the set of
//! operations linearized and the register's value, and skip configurations seen
//! before; at a return whose call was not linearized, backtrack.
//!
//! A write whose outcome is unknown (the client gave up, or the server said it may
//! have been applied) is open-ended: its completion is at infinity, so it may take
//! effect at any time after its invocation or, linearized after everything else,
//! never. Such a write whose value no read returned is left out before the search
//! (values are unique): placed at the end it changes nothing, and it could not
//! be needed anywhere else since no read saw it; kept, every one of them would
//! double the configurations to explore. Reads that failed are left out by the caller (they observed nothing);
//! writes refused as "not written" are left out too (and checked elsewhere never to
//! be observed).
//!
//! Owns only the search. Must never: call a history linearizable it did not prove
//! so, or search without a bound (it answers [`Verdict::Undecided`] past the bound).

use std::collections::HashSet;

/// One operation of a register's history. Times are in any monotonic unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegOp {
    /// Invocation time.
    pub call: u64,
    /// Completion time; `None` for a write of unknown outcome (open-ended).
    pub ret: Option<u64>,
    pub kind: RegKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegKind {
    /// Sets the register to the value.
    Write(u64),
    /// Observed the value (`None`: the register was unset).
    Read(Option<u64>),
}

/// The answer of [`check_register`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No linearization exists. The operation (index into the history) at which the
    /// deepest attempt got stuck, to look at first.
    NotLinearizable {
        stuck_at: usize,
    },
    /// The search gave up after this many steps.
    Undecided {
        steps: u64,
    },
}

const NONE: usize = usize::MAX;

/// Checks `ops` against a register that starts with `initial`, exploring at most
/// `max_steps` configurations.
pub fn check_register(ops: &[RegOp], initial: Option<u64>, max_steps: u64) -> Verdict {
    let seen_values: HashSet<u64> = ops
        .iter()
        .filter_map(|op| match op.kind {
            RegKind::Read(Some(v)) => Some(v),
            _ => None,
        })
        .collect();
    // Indexes into `ops` of the operations searched.
    let kept: Vec<usize> = (0..ops.len())
        .filter(|&i| match ops[i].kind {
            RegKind::Write(v) => ops[i].ret.is_some() || seen_values.contains(&v),
            RegKind::Read(_) => true,
        })
        .collect();
    let all = ops;
    let ops: Vec<RegOp> = kept.iter().map(|&i| all[i].clone()).collect();
    match search(&ops, initial, max_steps) {
        Verdict::NotLinearizable { stuck_at } => Verdict::NotLinearizable {
            stuck_at: kept[stuck_at],
        },
        v => v,
    }
}

fn search(ops: &[RegOp], initial: Option<u64>, max_steps: u64) -> Verdict {
    let n = ops.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    // Events: (time, is_return, op). Calls sort before returns at the same time, so
    // operations that touch in time count as concurrent (the lenient reading).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, false, i));
        events.push((op.ret.unwrap_or(u64::MAX), true, i));
    }
    events.sort_by_key(|&(t, is_ret, i)| (t, is_ret, i));
    // A doubly linked list over the events, with a head sentinel at index 2n.
    let head = 2 * n;
    let mut next = vec![NONE; 2 * n + 1];
    let mut prev = vec![NONE; 2 * n + 1];
    let mut call_of = vec![NONE; n];
    let mut ret_of = vec![NONE; n];
    let mut last = head;
    for (e, &(_, is_ret, i)) in events.iter().enumerate() {
        next[last] = e;
        prev[e] = last;
        last = e;
        if is_ret {
            ret_of[i] = e;
        } else {
            call_of[i] = e;
        }
    }
    let op_of: Vec<usize> = events.iter().map(|&(_, _, i)| i).collect();
    let is_return: Vec<bool> = events.iter().map(|&(_, r, _)| r).collect();

    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, x) = (prev[e], next[e]);
        next[p] = x;
        if x != NONE {
            prev[x] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, x) = (prev[e], next[e]);
        next[p] = e;
        if x != NONE {
            prev[x] = e;
        }
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut state = initial;
    let mut seen: HashSet<(Vec<u64>, Option<u64>)> = HashSet::new();
    // Operations linearized, in order, with the state before each.
    let mut stack: Vec<(usize, Option<u64>)> = Vec::new();
    let mut entry = next[head];
    let mut steps = 0u64;
    let mut deepest = (0usize, 0usize);
    while next[head] != NONE {
        steps += 1;
        if steps > max_steps {
            return Verdict::Undecided { steps };
        }
        if entry == NONE {
            // Unreachable: the list ends with returns, and a return backtracks.
            break;
        }
        let i = op_of[entry];
        if !is_return[entry] {
            let after = match ops[i].kind {
                RegKind::Write(v) => Some(Some(v)),
                RegKind::Read(r) => (r == state).then_some(state),
            };
            if let Some(after) = after {
                linearized[i / 64] |= 1 << (i % 64);
                if seen.insert((linearized.clone(), after)) {
                    stack.push((i, state));
                    state = after;
                    unlink(&mut next, &mut prev, call_of[i]);
                    unlink(&mut next, &mut prev, ret_of[i]);
                    if stack.len() > deepest.0 {
                        deepest = (stack.len(), i);
                    }
                    entry = next[head];
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            entry = next[entry];
        } else {
            // A return whose operation is not linearized yet: undo the last choice.
            let Some((j, before)) = stack.pop() else {
                return Verdict::NotLinearizable {
                    stuck_at: if deepest.0 == 0 { i } else { deepest.1 },
                };
            };
            state = before;
            linearized[j / 64] &= !(1 << (j % 64));
            // Relink in the reverse order of unlinking.
            relink(&mut next, &mut prev, ret_of[j]);
            relink(&mut next, &mut prev, call_of[j]);
            entry = next[call_of[j]];
        }
    }
    Verdict::Linearizable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(call: u64, ret: u64, v: u64) -> RegOp {
        RegOp {
            call,
            ret: Some(ret),
            kind: RegKind::Write(v),
        }
    }
    fn w_unknown(call: u64, v: u64) -> RegOp {
        RegOp {
            call,
            ret: None,
            kind: RegKind::Write(v),
        }
    }
    fn r(call: u64, ret: u64, v: Option<u64>) -> RegOp {
        RegOp {
            call,
            ret: Some(ret),
            kind: RegKind::Read(v),
        }
    }
    const STEPS: u64 = 1_000_000;

    #[test]
    fn sequential_reads_of_the_last_write_pass() {
        let h = [
            r(0, 1, None),
            w(2, 3, 1),
            r(4, 5, Some(1)),
            w(6, 7, 2),
            r(8, 9, Some(2)),
        ];
        assert_eq!(check_register(&h, None, STEPS), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_after_a_completed_write_fails() {
        let h = [w(0, 1, 1), w(2, 3, 2), r(4, 5, Some(1))];
        assert!(matches!(
            check_register(&h, None, STEPS),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn reading_a_value_never_written_fails() {
        let h = [w(0, 1, 1), r(2, 3, Some(7))];
        assert!(matches!(
            check_register(&h, None, STEPS),
            Verdict::NotLinearizable { .. }
        ));
        // And the initial value after a completed write.
        let h = [w(0, 1, 1), r(2, 3, None)];
        assert!(matches!(
            check_register(&h, None, STEPS),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn concurrent_writes_may_be_ordered_either_way() {
        // Two overlapping writes; reads after both see 2 then... only one order each.
        let h = [
            w(0, 10, 1),
            w(1, 9, 2),
            r(11, 12, Some(1)),
            r(13, 14, Some(1)),
        ];
        assert_eq!(check_register(&h, None, STEPS), Verdict::Linearizable);
        let h = [w(0, 10, 1), w(1, 9, 2), r(11, 12, Some(2))];
        assert_eq!(check_register(&h, None, STEPS), Verdict::Linearizable);
        // But two reads after both writes cannot see them in both orders.
        let h = [
            w(0, 10, 1),
            w(1, 9, 2),
            r(11, 12, Some(1)),
            r(13, 14, Some(2)),
        ];
        assert!(matches!(
            check_register(&h, None, STEPS),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn a_read_overlapping_a_write_may_see_either_value() {
        let h = [w(0, 1, 1), w(2, 10, 2), r(3, 4, Some(1)), r(5, 6, Some(2))];
        assert_eq!(check_register(&h, None, STEPS), Verdict::Linearizable);
        // Once a read saw the new value, a later read cannot see the old one.
        let h = [w(0, 1, 1), w(2, 10, 2), r(3, 4, Some(2)), r(5, 6, Some(1))];
        assert!(matches!(
            check_register(&h, None, STEPS),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn an_unknown_write_may_take_effect_late_or_never() {
        // Never: the register keeps 1.
        let h = [w(0, 1, 1), w_unknown(2, 2), r(10, 11, Some(1))];
        assert_eq!(check_register(&h, None, STEPS), Verdict::Linearizable);
        // Late: long after the client gave up, a read sees it...
        let h = [
            w(0, 1, 1),
            w_unknown(2, 2),
            r(10, 11, Some(1)),
            r(100, 101, Some(2)),
        ];
        assert_eq!(check_register(&h, None, STEPS), Verdict::Linearizable);
        // ...but once seen it cannot be undone by nothing.
        let h = [
            w(0, 1, 1),
            w_unknown(2, 2),
            r(10, 11, Some(2)),
            r(100, 101, Some(1)),
        ];
        assert!(matches!(
            check_register(&h, None, STEPS),
            Verdict::NotLinearizable { .. }
        ));
        // And it cannot take effect before it was invoked.
        let h = [w(0, 1, 1), r(2, 3, Some(2)), w_unknown(5, 2)];
        assert!(matches!(
            check_register(&h, None, STEPS),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn a_long_interleaved_history_is_decided_within_the_bound() {
        // About 630 operations, linearizable by construction (each read sees the last
        // write before it), with overlaps and unknown writes.
        let mut h = Vec::new();
        for k in 0..200u64 {
            let t = k * 10;
            h.push(w(t, t + 6, k));
            // Overlaps the write: either value is fine; report the new one.
            h.push(r(t + 1, t + 7, Some(k)));
            if k % 7 == 0 {
                // Unknown writes, every other one seen by a read.
                h.push(w_unknown(t + 2, 1_000_000 + k));
                let seen = k % 14 == 0;
                h.push(r(t + 8, t + 9, Some(if seen { 1_000_000 + k } else { k })));
            } else {
                h.push(r(t + 8, t + 9, Some(k)));
            }
        }
        assert_eq!(check_register(&h, None, 10_000_000), Verdict::Linearizable);
        // One stale read in the middle breaks it.
        let mut bad = h.clone();
        bad.push(r(1005, 1006, Some(3)));
        assert!(matches!(
            check_register(&bad, None, 10_000_000),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn the_step_bound_holds() {
        let h: Vec<RegOp> = (0..50).map(|k| w(0, 1000, k)).collect();
        let mut h = h;
        h.push(r(2000, 2001, Some(999)));
        assert!(matches!(
            check_register(&h, None, 1000),
            Verdict::Undecided { .. }
        ));
    }
}
