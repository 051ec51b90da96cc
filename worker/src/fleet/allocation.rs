//! How the connection budget is shared, as pure functions over the live leases: every
//! worker's fair target (max-min fair water-filling), and what one worker records at a
//! heartbeat so that the granted connections of all rows never add up to more than the
//! budget less the registration connection.
//!
//! The registration connection: one connection of the budget belongs to nobody's share. A
//! worker must connect before it can learn its share, so a joining worker registers on that
//! spare connection, opened for the heartbeat and closed right after;
//! without it, a lone worker holding the whole budget (with the role's `CONNECTION LIMIT` at
//! the budget) would leave a newcomer no way in.
//!
//! Growing and shrinking are not symmetric. A worker grows only into room no row holds,
//! and only after the row saying so has committed; a worker above its target keeps its row
//! as it is, shrinks locally (its writes in progress end, its idle connections close), and
//! records the lower number only then. So at every commit the rows cover every connection
//! their workers really hold.

use chrono::{DateTime, Utc};

/// One worker's lease row, as read inside the fleet's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    /// The worker's id (text form: ties on `started_at` are broken by it).
    pub(crate) worker_id: String,
    /// Connections it may hold now.
    pub(crate) granted: u32,
    /// Connections it would use: min(budget - 1, DATABASE_MAX_CONNECTIONS).
    pub(crate) wanted: u32,
    /// DATABASE_CONNECTION_BUDGET it was started with.
    pub(crate) budget: u32,
    /// When it registered: older workers get the remainders, so shares stay put as others
    /// come and go.
    pub(crate) started_at: DateTime<Utc>,
}

/// What one worker does at a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Its fair share now.
    pub(crate) target: u32,
    /// What its row says after this heartbeat: more than it holds only by room that no other
    /// row holds; never less than it holds.
    pub(crate) record: u32,
}

/// Connections the live workers share: the smallest budget any of them was given (so a
/// deployment that lowers the budget applies it at once, one that raises it only once the old
/// workers are gone), less the registration connection.
pub(crate) fn shared(leases: &[Lease]) -> u32 {
    leases
        .iter()
        .map(|lease| lease.budget)
        .min()
        .map_or(0, |budget| budget.saturating_sub(1))
}

/// Every worker's fair share of [`shared`], in the order given: max-min fair water-filling
/// (a worker that wants less than an equal share gets what it wants, the rest is split
/// evenly among the others), the remainder going one each to the oldest workers (by
/// `started_at`, then id). With fewer connections than workers, the newest get 0.
pub(crate) fn targets(leases: &[Lease]) -> Vec<u32> {
    let mut targets = vec![0; leases.len()];
    let mut open: Vec<usize> = (0..leases.len()).collect();
    open.sort_by(|&a, &b| {
        let key = |i: usize| (leases[i].started_at, &leases[i].worker_id);
        key(a).cmp(&key(b))
    });
    let mut left = shared(leases);
    while !open.is_empty() {
        let count = open.len() as u32;
        let share = left / count;
        let (capped, rest): (Vec<usize>, Vec<usize>) =
            open.iter().partition(|&&i| leases[i].wanted <= share);
        if capped.is_empty() {
            let extra = (left % count) as usize;
            for (position, &i) in open.iter().enumerate() {
                targets[i] = share + u32::from(position < extra);
            }
            break;
        }
        for i in capped {
            targets[i] = leases[i].wanted;
            left -= leases[i].wanted;
        }
        open = rest;
    }
    targets
}

/// The plan of worker `me` (an index into `leases`, its own row included: a newcomer's with
/// `granted` 0), which really holds `held` connections now.
pub(crate) fn plan(leases: &[Lease], me: usize, held: u32) -> Plan {
    let target = targets(leases)[me];
    let others: u32 = leases
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != me)
        .map(|(_, lease)| lease.granted)
        .sum();
    let room = shared(leases).saturating_sub(others);
    let record = if target > held {
        held.max(target.min(room))
    } else {
        held
    };
    Plan { target, record }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    /// Leases of workers started one second apart, each wanting `wanted` of `budget`.
    fn fleet(budget: u32, wanted: &[u32], granted: &[u32]) -> Vec<Lease> {
        wanted
            .iter()
            .zip(granted)
            .enumerate()
            .map(|(i, (&wanted, &granted))| Lease {
                worker_id: format!("{i:08}-0000-4000-8000-000000000000"),
                granted,
                wanted,
                budget,
                started_at: Utc
                    .timestamp_opt(1_700_000_000 + i as i64, 0)
                    .single()
                    .expect("valid"),
            })
            .collect()
    }

    #[test]
    fn a_lone_worker_gets_all_but_the_registration_connection_up_to_its_pool() {
        assert_eq!(targets(&fleet(8, &[7], &[0])), vec![7]);
        assert_eq!(targets(&fleet(100, &[4], &[0])), vec![4]);
        let alone = fleet(8, &[7], &[0]);
        assert_eq!(
            plan(&alone, 0, 0),
            Plan {
                target: 7,
                record: 7
            }
        );
    }

    #[test]
    fn joins_split_evenly_with_remainders_to_the_oldest() {
        assert_eq!(targets(&fleet(8, &[7, 7], &[7, 0])), vec![4, 3]);
        assert_eq!(targets(&fleet(8, &[7, 7, 7], &[4, 3, 0])), vec![3, 2, 2]);
        assert_eq!(targets(&fleet(8, &[7; 4], &[3, 2, 2, 0])), vec![2, 2, 2, 1]);
        // The order is by start, not by position in the rows.
        let mut shuffled = fleet(8, &[7; 4], &[0; 4]);
        shuffled.reverse();
        assert_eq!(targets(&shuffled), vec![1, 2, 2, 2]);
    }

    #[test]
    fn a_newcomer_grows_only_into_room_no_row_holds() {
        // The old worker still holds 7: the newcomer records 0 and waits.
        let joined = fleet(8, &[7, 7], &[7, 0]);
        assert_eq!(
            plan(&joined, 1, 0),
            Plan {
                target: 3,
                record: 0
            }
        );
        // The old worker is above its target: it keeps its row until it has shrunk.
        assert_eq!(
            plan(&joined, 0, 7),
            Plan {
                target: 4,
                record: 7
            }
        );
        // Once it has shrunk to 4 and recorded it, the newcomer takes the room.
        let shrunk = fleet(8, &[7, 7], &[4, 0]);
        assert_eq!(plan(&shrunk, 0, 4).record, 4);
        assert_eq!(plan(&shrunk, 1, 0).record, 3);
        // Part of the room only: 2 of its 3.
        let partly = fleet(8, &[7, 7], &[5, 0]);
        assert_eq!(plan(&partly, 1, 0).record, 2);
    }

    #[test]
    fn leaves_hand_the_shares_back() {
        // Four workers with 2, 2, 2, 1; the first leaves (its row is gone).
        let left = fleet(8, &[7; 4], &[2, 2, 2, 1])[1..].to_vec();
        assert_eq!(targets(&left), vec![3, 2, 2]);
        assert_eq!(plan(&left, 0, 2).record, 3);
        assert_eq!(plan(&left, 2, 1).record, 2);
    }

    #[test]
    fn a_worker_that_wants_less_leaves_the_rest_to_the_others() {
        // Budget 20 (19 shared): pools of 2 and 4 are served in full, the rest is split.
        assert_eq!(
            targets(&fleet(20, &[2, 16, 4, 16], &[0; 4])),
            vec![2, 7, 4, 6]
        );
        // Everyone capped below the fair share: connections are left over.
        assert_eq!(targets(&fleet(100, &[4, 4, 4], &[0; 3])), vec![4, 4, 4]);
    }

    #[test]
    fn fewer_connections_than_workers_leaves_the_newest_without() {
        assert_eq!(targets(&fleet(3, &[2; 4], &[0; 4])), vec![1, 1, 0, 0]);
        let crowded = fleet(3, &[2; 4], &[1, 1, 0, 0]);
        assert_eq!(
            plan(&crowded, 3, 0),
            Plan {
                target: 0,
                record: 0
            }
        );
    }

    #[test]
    fn the_smallest_budget_of_the_fleet_applies() {
        let mut mixed = fleet(12, &[11, 7], &[0, 0]);
        mixed[1].budget = 8;
        assert_eq!(shared(&mixed), 7);
        assert_eq!(targets(&mixed), vec![4, 3]);
        // A worker above a lowered budget never records less than it holds.
        let mut over = fleet(12, &[11, 7], &[9, 0]);
        over[1].budget = 8;
        assert_eq!(
            plan(&over, 0, 9),
            Plan {
                target: 4,
                record: 9
            }
        );
        assert_eq!(plan(&over, 1, 0).record, 0);
    }

    #[test]
    fn records_never_exceed_the_shared_connections() {
        // Every worker in turn plans against the rows as the others left them.
        for budget in 2..=12u32 {
            for workers in 1..=6usize {
                let wanted: Vec<u32> = (0..workers).map(|i| 1 + (i as u32 * 3) % 8).collect();
                let mut rows = fleet(budget, &wanted, &vec![0; workers]);
                // The first worker was alone and holds all it could.
                rows[0].granted = rows[0].wanted.min(budget - 1);
                for round in 0..4 {
                    for me in 0..workers {
                        let held = rows[me].granted;
                        let plan = plan(&rows, me, held);
                        // A shrink is recorded only after the local one (here: at once).
                        rows[me].granted = if plan.target < held {
                            plan.target
                        } else {
                            plan.record
                        };
                        let total: u32 = rows.iter().map(|r| r.granted).sum();
                        assert!(
                            total < budget,
                            "budget {budget}, {workers} workers, round {round}: {rows:?}"
                        );
                    }
                }
                // Settled: everyone at its target.
                let granted: Vec<u32> = rows.iter().map(|r| r.granted).collect();
                assert_eq!(
                    granted,
                    targets(&rows),
                    "budget {budget}, {workers} workers"
                );
            }
        }
    }
}
